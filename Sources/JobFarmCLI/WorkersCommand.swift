import ArgumentParser
import JobProtocol
import JobQueue

struct WorkersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "workers",
        abstract: "List the live worker processes and, for an hour (JobFarmConfiguration.goneWorkerRetention), those gone.",
        discussion: """
            state: live (a heartbeat within --live-within), stopped (exited cleanly) or gone (stopped heartbeating: \
            killed, crashed or cut off; its leases come back to their queue through the reaper within a lease).
            """)

    @OptionGroup var global: GlobalOptions
    @Option(parsing: .unconditional, help: "Seconds since its last heartbeat within which a worker counts as live.")
    var liveWithin: Double = 60
    @Flag(help: "Only the live workers.") var live = false
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        try OptionCheck.seconds(liveWithin, "--live-within", positive: true)
    }

    func run() async throws {
        let farm = try global.makeFarm()
        var workers = try await reportingErrors { try await farm.workerRegistry(liveWithin: .milliseconds(Int64(liveWithin * 1000))) }
        if live { workers = workers.filter { $0.goneAt == nil } }
        if json {
            printJSON(.array(workers.map(Self.json)))
            return
        }
        if workers.isEmpty {
            print("no live workers: start one with `jobfarm worker`")
            return
        }
        let now = WallClock.nowMilliseconds()
        printTable(
            header: ["worker", "state", "since", "pool", "version", "host", "pid", "queues", "tiers", "busy", "processed", "failed", "started", "last heartbeat"],
            rows: workers.map { worker in
                let fields = worker.fields
                return [
                    worker.id, worker.state, worker.goneAt.map { human(.milliseconds(now - $0)) + " ago" } ?? "-",
                    worker.pool ?? "-", worker.version ?? "-", fields["host"] ?? "-", fields["pid"] ?? "-", fields["queues"] ?? "-",
                    fields["tiers"] ?? "-", "\(worker.inFlight)/\(fields["concurrency"] ?? "?")", "\(worker.processed)", "\(worker.failed)",
                    worker.startedAt.map { isoTime($0) } ?? "-", human(.milliseconds(max(0, now - worker.lastSeen))) + " ago",
                ]
            })
    }

    static func json(_ worker: WorkerInfo) -> JSONValue {
        var object: [String: JSONValue] = [
            "id": .string(worker.id), "state": .string(worker.state), "last_seen": .number(Double(worker.lastSeen)),
            "processed": .number(Double(worker.processed)), "failed": .number(Double(worker.failed)),
            "in_flight": .number(Double(worker.inFlight)),
        ]
        if let at = worker.goneAt { object["gone_at"] = .number(Double(at)) }
        if let started = worker.startedAt { object["started"] = .number(Double(started)) }
        for key in ["pool", "version", "host", "pid", "queues", "tiers", "kinds", "concurrency"] {
            if let value = worker.fields[key] { object[key] = .string(value) }
        }
        return .object(object)
    }
}
