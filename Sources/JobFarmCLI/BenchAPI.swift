import ArgumentParser
import Dispatcher
import Foundation
import Hummingbird
import JobProtocol
import JobQueue
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import RedisClient
import Synchronization

/// `jobfarm bench api`: the dispatcher's submissions under load (wrk, closed loop; an open-loop client of its own),
/// beside a Hummingbird route that does no work, measured in the same run.
///
/// A subcommand rather than a script: it starts the no-work route in its own process with the same Hummingbird, and
/// the `jobfarm serve` and `jobfarm worker` processes from its own binary, creates the API key and tenants file in
/// a namespace of its own (deleted afterwards), and its open-loop client is Swift on NIO (wrk cannot hold a rate;
/// h2load's `--rate` paces connections, not requests, and reports no percentiles). `scripts/bench-api` installs
/// wrk when missing and runs it.
struct BenchAPICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "api",
        abstract: "POST /v1/jobs under load (wrk and an open-loop client) beside a Hummingbird route doing no work.",
        discussion: """
            Needs wrk (Debian package wrk; scripts/bench-api installs it) and a Redis (--redis-url). Starts `jobfarm serve` \
            and `jobfarm worker` processes from this binary; uses a namespace of its own, deleted afterwards. Build in \
            release first: swift build -c release. Raises the open-files limit to the hard limit (1,000 connections \
            need ~2,100 descriptors between wrk and the server).
            """)

    @OptionGroup var global: GlobalOptions
    @Option(help: "Length of each closed-loop and open-loop run, e.g. 30s.") var duration: String = "30s"
    @Option(parsing: .unconditional, help: "Concurrent connections (wrk and the open-loop client).") var connections: Int = 1000
    @Option(parsing: .unconditional, help: "Submissions per second of the open-loop run.") var rate: Int = 5000
    @Option(parsing: .unconditional, help: "The open-loop goal: p95 below this many milliseconds (the rate search looks for the highest rate meeting it).")
    var p95Goal: Double = 50
    @Option(help: "Length of each step of the rate search, e.g. 10s (default: the shorter of --duration and 10s).") var searchStep: String?
    @Option(help: "Phases to run, comma-separated: closed (wrk: no-work route, plain, API key, rate limit, idempotency), open (open loop at --rate), search (highest rate with p95 under the goal), workers (closed and open loop with a worker draining), events (the queue's end-to-end rate with and without a dispatcher connected).")
    var phases: String = "closed,open,search,workers,events"
    @Option(parsing: .unconditional, help: "wrk threads.") var wrkThreads: Int = 2
    @Option(parsing: .unconditional, help: "Jobs per end-to-end run of the events phase.") var e2eJobs: Int = 50_000

    static let allPhases = ["closed", "open", "search", "workers", "events"]

    var phaseList: [String] { phases.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func validate() throws {
        guard let parsed = Duration.parse(duration), parsed >= .seconds(1) else { throw ValidationError("--duration '\(duration)' must be a duration of at least 1s, such as 30s") }
        if let searchStep, (Duration.parse(searchStep) ?? .zero) < .seconds(1) { throw ValidationError("--search-step '\(searchStep)' must be a duration of at least 1s") }
        _ = parsed
        try OptionCheck.integer(connections, "--connections", atLeast: 1, atMost: 20_000)
        try OptionCheck.integer(rate, "--rate", atLeast: 1)
        try OptionCheck.integer(wrkThreads, "--wrk-threads", atLeast: 1)
        try OptionCheck.integer(e2eJobs, "--e2e-jobs", atLeast: 1)
        guard p95Goal > 0 else { throw ValidationError("--p95-goal must be positive") }
        for phase in phaseList where !Self.allPhases.contains(phase) {
            throw ValidationError("--phases: '\(phase)' is not one of \(Self.allPhases.joined(separator: ", "))")
        }
    }

    func run() async throws {
        global.bootstrapLogging()
        let runLength = Duration.parse(duration)!
        let step = searchStep.flatMap(Duration.parse) ?? min(runLength, .seconds(10))
        guard let wrk = Self.findExecutable("wrk") else {
            throw CLIError(message: "wrk is not installed: run scripts/bench-api (it installs the Debian package wrk), or apt-get install wrk")
        }
        let files = Self.raiseOpenFilesLimit()
        if files < connections * 2 + 200 {
            print("WARNING: the open-files limit is \(files); \(connections) connections need about \(connections * 2 + 200) (raise the hard limit: ulimit -Hn)")
        }
        var configuration = try global.farmConfiguration()
        configuration.namespace = "jfapi-" + String(UInt32.random(in: 0...UInt32.max), radix: 36)
        let namespace = configuration.namespace
        let farm = try JobFarm(configuration: configuration, connections: 1)
        let raw = RedisClient(configuration: configuration.redis, name: "bench-api")
        do {
            _ = try await raw.execute("PING")
        } catch let error as RedisError {
            throw CLIError(error)
        }
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        let load = (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "?"
        print("jobfarm bench api — \(isoTime(WallClock.nowMilliseconds())), Redis \(configuration.redis), \(ProcessInfo.processInfo.activeProcessorCount) cores, load average \(load), open files \(files)")
        print("\(connections) connections, runs of \(runLength), wrk \(wrk) with \(wrkThreads) threads; everything (Redis, servers, load) on this machine's cores")
        #if DEBUG
        print("WARNING: debug build; figures are meaningful only from `swift build -c release`")
        #endif
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-bench-api-\(namespace)")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        var children: [Process] = []
        var rows: [Row] = []
        let phases = Set(phaseList)
        do {
            // Set-up: an API key of a tenant with no limit, one of a tenant with a limit far above the load (the
            // limit is checked, never reached), both in the bench namespace.
            let keys = RedisAPIKeys(client: raw, namespace: namespace)
            let (plainKey, _) = try await keys.create(tenant: "bench", tiers: configuration.tiers, isOperator: true)
            let (limitedKey, _) = try await keys.create(tenant: "limited", tiers: configuration.tiers, isOperator: false)
            let tenantsFile = scratch.appendingPathComponent("tenants.json")
            try Data(#"{"tenants": {"bench": {}, "limited": {"rateLimit": {"perSecond": 1000000, "burst": 1000000}}}}"#.utf8).write(to: tenantsFile)

            if phases.contains("events") {
                rows.append(try await endToEnd(farm, raw: raw, binary: binary, label: "queue end to end, no dispatcher connected"))
            }

            let ceiling = try await CeilingServer.start()
            defer { ceiling.stop() }
            let open = try await startServe(binary: binary, namespace: namespace, arguments: ["--no-auth"], scratch: scratch, name: "open", children: &children)
            let guarded = try await startServe(binary: binary, namespace: namespace, arguments: ["--tenants", tenantsFile.path], scratch: scratch, name: "guarded", children: &children)
            let body = #"{"kind": "noop", "payload": {}}"#
            func wrkRun(_ label: String, port: Int, key: String?, idempotency: Bool = false, path: String = "/v1/jobs") async throws -> Row {
                let script = scratch.appendingPathComponent("post-\(rows.count).lua")
                try Data(Self.wrkScript(body: body, key: key, idempotency: idempotency).utf8).write(to: script)
                let row = try await Self.runWrk(wrk, threads: wrkThreads, connections: connections, duration: runLength, script: script.path,
                                                url: "http://127.0.0.1:\(port)\(path)", label: label)
                try await purgeQueues(raw, namespace: namespace)
                return row
            }
            func openRun(_ label: String, port: Int, key: String?, rate: Int, length: Duration) async throws -> Row {
                var headers = [("Content-Type", "application/json")]
                if let key { headers.append(("Authorization", "Bearer \(key)")) }
                let outcome = try await OpenLoopLoad.run(host: "127.0.0.1", port: port, request: LoadRequest(path: "/v1/jobs", headers: headers, body: Array(body.utf8)),
                                                         rate: Double(rate), connections: connections, duration: length, group: group)
                try await purgeQueues(raw, namespace: namespace)
                return Row(label: label, kind: "open", rate: outcome.achievedRate, target: rate, p50: outcome.percentile(50), p95: outcome.percentile(95),
                           p99: outcome.percentile(99), errors: outcome.errors + outcome.unfinished, requests: outcome.completed)
            }

            var ceilingRate: Double?
            if phases.contains("closed") {
                let noWork = try await wrkRun("no-work Hummingbird route (ceiling)", port: ceiling.port, key: nil)
                ceilingRate = noWork.rate
                rows.append(noWork)
                print(noWork.line(ceiling: nil))
                for (label, port, key, idempotency) in [
                    ("POST /v1/jobs, --no-auth", open, nil, false),
                    ("POST /v1/jobs, API key", guarded, plainKey, false),
                    ("POST /v1/jobs, API key + rate limit", guarded, limitedKey, false),
                    ("POST /v1/jobs, API key + Idempotency-Key", guarded, plainKey, true),
                ] as [(String, Int, String?, Bool)] {
                    let row = try await wrkRun(label, port: port, key: key, idempotency: idempotency)
                    rows.append(row)
                    print(row.line(ceiling: ceilingRate))
                }
            }
            if phases.contains("open") {
                let row = try await openRun("open loop, API key", port: guarded, key: plainKey, rate: rate, length: runLength)
                rows.append(row)
                print(row.line(ceiling: nil))
            }
            if phases.contains("search") {
                // Double while the goal holds, then halve the gap four times.
                var good = 0, bad = 0
                var candidate = max(250, rate / 2)
                while bad == 0 || bad - good > max(250, good / 16) {
                    if candidate > 200_000 { break }
                    let row = try await openRun("search \(candidate)/s", port: guarded, key: plainKey, rate: candidate, length: step)
                    let meets = row.p95 < p95Goal && row.errors == 0
                    print("  search: \(candidate)/s → p95 \(Self.ms(row.p95)), \(row.errors) errors: \(meets ? "meets" : "misses") p95 < \(Int(p95Goal)) ms")
                    if meets { good = candidate } else { bad = candidate }
                    candidate = bad == 0 ? candidate * 2 : (good + bad) / 2
                    if bad != 0 && candidate <= good { break }
                }
                rows.append(Row(label: "highest rate with p95 < \(Int(p95Goal)) ms (open loop, API key)", kind: "search", rate: Double(good), target: nil,
                                p50: .nan, p95: .nan, p99: .nan, errors: 0, requests: 0))
                print("highest rate with p95 < \(Int(p95Goal)) ms: \(good)/s\(bad == 0 ? " (the search stopped at 200,000/s)" : "; \(bad)/s misses")")
            }
            if phases.contains("events") {
                // The dispatcher answers one wait (it subscribes), then the subscription closes after the linger.
                let id = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "e2e-probe"))
                let probeWorker = try spawnWorker(binary: binary, namespace: namespace, queues: "e2e-probe", exitWhenEmpty: true)
                probeWorker.waitUntilExit()
                _ = try await OpenLoopLoad.once(host: "127.0.0.1", port: guarded, request: LoadRequest(
                    method: .GET, path: "/v1/jobs/\(id)/wait?timeout=5s", headers: [("Authorization", "Bearer \(plainKey)")]), group: group)
                try await Task.sleep(for: .seconds(3))
                rows.append(try await endToEnd(farm, raw: raw, binary: binary, label: "queue end to end, a dispatcher connected (no wait in progress)"))
                // A wait in progress for the whole run: someone listens, every transition publishes.
                let waited = try await farm.enqueue(EnqueueRequest(kind: "noop", queue: "e2e-held", delay: .seconds(3600)))
                let waiting = Task {
                    try await OpenLoopLoad.once(host: "127.0.0.1", port: guarded, request: LoadRequest(
                        method: .GET, path: "/v1/jobs/\(waited)/wait?timeout=60s", headers: [("Authorization", "Bearer \(plainKey)")]), group: group)
                }
                try await Task.sleep(for: .milliseconds(300))
                rows.append(try await endToEnd(farm, raw: raw, binary: binary, label: "queue end to end, a wait in progress on the dispatcher"))
                waiting.cancel()
            }
            if phases.contains("workers") {
                let worker = try spawnWorker(binary: binary, namespace: namespace, queues: "default", exitWhenEmpty: false)
                children.append(worker)
                try await Task.sleep(for: .milliseconds(500))
                if phases.contains("closed") {
                    let row = try await wrkRun("POST /v1/jobs, API key, 1 worker draining", port: guarded, key: plainKey)
                    rows.append(row)
                    print(row.line(ceiling: ceilingRate))
                }
                let row = try await openRun("open loop, API key, 1 worker draining", port: guarded, key: plainKey, rate: rate, length: runLength)
                rows.append(row)
                print(row.line(ceiling: nil))
            }
        } catch {
            for child in children where child.isRunning { child.terminate() }
            try? await deleteNamespace(raw, namespace: namespace)
            try? FileManager.default.removeItem(at: scratch)
            try? await group.shutdownGracefully()
            throw error
        }
        for child in children where child.isRunning { child.terminate() }
        for child in children { child.waitUntilExit() }
        try await deleteNamespace(raw, namespace: namespace)
        try? FileManager.default.removeItem(at: scratch)
        try? await group.shutdownGracefully()
        printTable(rows)
    }

    // MARK: - Rows

    struct Row {
        var label: String
        /// closed, open, search, e2e.
        var kind: String
        var rate: Double
        var target: Int?
        var p50: Double
        var p95: Double
        var p99: Double
        var errors: Int
        var requests: Int
        var note = ""

        func line(ceiling: Double?) -> String {
            var text = "\(label): \(Int(rate.rounded()))/s"
            if let target { text += " (scheduled \(target)/s)" }
            if !p50.isNaN { text += ", p50 \(BenchAPICommand.ms(p50)) p95 \(BenchAPICommand.ms(p95)) p99 \(BenchAPICommand.ms(p99))" }
            text += ", \(errors) errors"
            if let ceiling, ceiling > 0 { text += String(format: ", %.2f of the no-work route", rate / ceiling) }
            if !note.isEmpty { text += "; " + note }
            return text
        }
    }

    static func ms(_ value: Double) -> String { value.isNaN ? "-" : String(format: "%.1f ms", value) }

    func printTable(_ rows: [Row]) {
        let ceiling = rows.first { $0.label.hasPrefix("no-work") }?.rate
        print("")
        print("| figure | rate | p50 | p95 | p99 | errors | ratio to the no-work route |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for row in rows {
            let ratio = (row.kind == "closed" && ceiling != nil && !row.label.hasPrefix("no-work")) ? String(format: "%.2f", row.rate / ceiling!) : "-"
            let rateText = row.kind == "e2e" ? "\(Int(row.rate.rounded())) jobs/s" : row.target.map { "\(Int(row.rate.rounded()))/s (of \($0)/s)" } ?? "\(Int(row.rate.rounded()))/s"
            let errors = row.kind == "e2e" ? row.note : String(row.errors)
            print("| \(row.label) | \(rateText) | \(Self.ms(row.p50)) | \(Self.ms(row.p95)) | \(Self.ms(row.p99)) | \(errors) | \(ratio) |")
        }
        print("")
        print("Goals: closed loop 0 errors, ≥ 0.4 of the no-work route, p99 < 100 ms; open loop at 5,000/s from 1,000 connections p95 < \(Int(p95Goal)) ms.")
        print("Load generators (wrk, the open-loop client), Redis and the servers share this machine's cores: figures are lower bounds.")
    }

    // MARK: - wrk

    /// The wrk script: POSTs the body; with `idempotency`, a fresh `Idempotency-Key` per request. Its `done` prints
    /// one line the bench reads.
    static func wrkScript(body: String, key: String?, idempotency: Bool) -> String {
        var lines = [
            "wrk.method = \"POST\"",
            "wrk.body = '\(body)'",
            "wrk.headers[\"Content-Type\"] = \"application/json\"",
        ]
        if let key { lines.append("wrk.headers[\"Authorization\"] = \"Bearer \(key)\"") }
        if idempotency {
            lines += [
                "local threads = 0",
                "function setup(thread) threads = threads + 1; thread:set(\"tid\", threads) end",
                "local sent = 0",
                "local run = tostring(os.time())",
                "function request()",
                "  sent = sent + 1",
                "  wrk.headers[\"Idempotency-Key\"] = run .. \"-\" .. tostring(tid) .. \"-\" .. tostring(sent)",
                "  return wrk.format()",
                "end",
            ]
        }
        lines += [
            "function done(summary, latency, requests)",
            "  io.write(string.format(\"JOBFARM requests=%d duration=%d p50=%d p95=%d p99=%d connect=%d read=%d write=%d status=%d timeout=%d\\n\",",
            "    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95), latency:percentile(99),",
            "    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.status, summary.errors.timeout))",
            "end",
        ]
        return lines.joined(separator: "\n") + "\n"
    }

    static func runWrk(_ wrk: String, threads: Int, connections: Int, duration: Duration, script: String, url: String, label: String) async throws -> Row {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: wrk)
        let seconds = max(1, Int(duration.seconds.rounded()))
        process.arguments = ["-t\(threads)", "-c\(connections)", "-d\(seconds)s", "--timeout", "10s", "-s", script, url]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let data = await Task.detached { output.fileHandleForReading.readDataToEndOfFile() }.value
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("JOBFARM ") }) else {
            throw CLIError(message: "wrk printed no result (exit \(process.terminationStatus)):\n\(text)")
        }
        var fields: [String: Double] = [:]
        for item in line.split(separator: " ").dropFirst() {
            let parts = item.split(separator: "=")
            if parts.count == 2 { fields[String(parts[0])] = Double(parts[1]) }
        }
        let requests = fields["requests"] ?? 0
        let errors = ["connect", "read", "write", "status", "timeout"].reduce(0) { $0 + Int(fields[$1] ?? 0) }
        return Row(label: label, kind: "closed", rate: requests / max(1e-9, (fields["duration"] ?? 1) / 1e6), target: nil,
                   p50: (fields["p50"] ?? .nan) / 1000, p95: (fields["p95"] ?? .nan) / 1000, p99: (fields["p99"] ?? .nan) / 1000,
                   errors: errors, requests: Int(requests))
    }

    // MARK: - Processes

    func startServe(binary: String, namespace: String, arguments: [String], scratch: URL, name: String, children: inout [Process]) async throws -> Int {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--redis-url", global.resolvedRedisURL, "--namespace", namespace, "--port", "0", "--replica", "bench-\(name)",
                             "--outbox", scratch.appendingPathComponent("outbox-\(name).sqlite").path, "--log-level", "error"] + arguments
        let log = scratch.appendingPathComponent("serve-\(name).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        children.append(process)
        for _ in 0..<400 {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
               let port = line.split(separator: ":").last.flatMap({ Int($0) }) {
                return port
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw CLIError(message: "jobfarm serve did not start:\n\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
    }

    func spawnWorker(binary: String, namespace: String, queues: String, exitWhenEmpty: Bool) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["worker", "--redis-url", global.resolvedRedisURL, "--namespace", namespace, "--queues", queues, "--log-level", "error"]
            + (exitWhenEmpty ? ["--exit-when-empty"] : [])
        var environment = ProcessInfo.processInfo.environment
        environment["JOBFARM_BLAS_AUTOTUNE"] = "0"
        environment["JOBFARM_KERNEL_CALIBRATION"] = "0"
        process.environment = environment
        try process.run()
        return process
    }

    /// Enqueues `e2eJobs` no-op jobs in bulk, then times one worker process draining them; counts the PUBLISHes
    /// Redis ran meanwhile.
    func endToEnd(_ farm: JobFarm, raw: RedisClient, binary: String, label: String) async throws -> Row {
        _ = try await farm.enqueue((0..<e2eJobs).map { _ in EnqueueRequest(kind: "noop", queue: "e2e") }, chunkSize: 1000)
        let before = try await Self.publishCount(raw)
        let clock = ContinuousClock()
        let start = clock.now
        let worker = try spawnWorker(binary: binary, namespace: farm.configuration.namespace, queues: "e2e", exitWhenEmpty: true)
        await Task.detached { worker.waitUntilExit() }.value
        let elapsed = clock.now - start
        let published = try await Self.publishCount(raw) - before
        let row = Row(label: label, kind: "e2e", rate: Double(e2eJobs) / elapsed.seconds, target: nil, p50: .nan, p95: .nan, p99: .nan,
                      errors: 0, requests: e2eJobs, note: "\(published) PUBLISH")
        print(row.line(ceiling: nil) + " (\(e2eJobs) jobs, one worker process started and drained, its start-up included)")
        return row
    }

    static func publishCount(_ raw: RedisClient) async throws -> Int {
        let text = try await raw.execute("INFO", "commandstats").string ?? ""
        guard let line = text.split(whereSeparator: \.isNewline).first(where: { $0.hasPrefix("cmdstat_publish:") }),
              let calls = line.split(separator: ",").first?.split(separator: "=").last.flatMap({ Int($0) }) else { return 0 }
        return calls
    }

    /// Drops the jobs the runs left in the bench namespace's queues (no worker drains most runs).
    func purgeQueues(_ raw: RedisClient, namespace: String) async throws {
        try await unlink(raw, pattern: "\(namespace):{default}:*")
    }

    func deleteNamespace(_ raw: RedisClient, namespace: String) async throws {
        try await unlink(raw, pattern: "\(namespace):*")
    }

    private func unlink(_ raw: RedisClient, pattern: String) async throws {
        var cursor = "0"
        repeat {
            let reply = try await raw.execute("SCAN", cursor, "MATCH", pattern, "COUNT", "1000").array ?? []
            guard reply.count == 2 else { break }
            cursor = reply[0].string ?? "0"
            let keys = reply[1].array?.compactMap(\.string) ?? []
            if !keys.isEmpty { _ = try await raw.execute(RedisCommand(["UNLINK"] + keys)) }
        } while cursor != "0"
    }

    static func findExecutable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin"] {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }

    /// Raises this process's soft open-files limit to its hard limit (children inherit it); returns the limit now.
    static func raiseOpenFilesLimit() -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 0 }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
            _ = getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
        return Int(limit.rlim_cur)
    }
}

/// A Hummingbird application in this process whose one route, `POST /v1/jobs`, answers 201 doing no work: the
/// framework's ceiling on this machine.
final class CeilingServer: Sendable {
    let port: Int
    private let task: Task<Void, any Error>

    private init(port: Int, task: Task<Void, any Error>) {
        self.port = port
        self.task = task
    }

    static func start() async throws -> CeilingServer {
        let router = Router()
        router.post("/v1/jobs") { _, _ in
            Response(status: .created, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: ByteBuffer(string: "{}")))
        }
        var logger = Logger(label: "bench.ceiling")
        logger.logLevel = .critical  // stopping it by cancellation logs errors that mean nothing here
        let port = Mutex<Int?>(nil)
        let application = Application(
            router: router, configuration: ApplicationConfiguration(address: .hostname("127.0.0.1", port: 0), serverName: "ceiling"),
            onServerRunning: { channel in port.withLock { $0 = channel.localAddress?.port } }, logger: logger)
        let task = Task { try await application.runService(gracefulShutdownSignals: []) }
        for _ in 0..<200 {
            if let bound = port.withLock({ $0 }) { return CeilingServer(port: bound, task: task) }
            try await Task.sleep(for: .milliseconds(25))
        }
        task.cancel()
        throw CLIError(message: "the no-work Hummingbird route did not start")
    }

    func stop() { task.cancel() }
}
