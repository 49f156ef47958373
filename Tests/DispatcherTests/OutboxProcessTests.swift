import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import RedisClient
import Synchronization
import Testing

/// `jobfarm serve` as a process whose output goes to a log file, found by its "listening on" line.
final class SpoolingServeProcess: @unchecked Sendable {
    // @unchecked: used from one test task.
    let process = Process()
    let log: URL
    private(set) var base = ""

    init(_ arguments: [String], log: URL) async throws {
        self.log = log
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.executableURL = URL(fileURLWithPath: PackagePaths.jobfarm)
        process.arguments = ["serve"] + arguments
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        for _ in 0..<400 where base.isEmpty {
            if let line = output.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }) {
                base = String(line.dropFirst("listening on ".count))
            } else {
                try await Task.sleep(for: .milliseconds(25))
            }
        }
        if base.isEmpty { throw TestFailure("jobfarm serve did not start:\n\(output)") }
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    func kill9() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
}

/// Counts the runs of each `echo` job by the `n` of its payload.
struct CountingEcho: JobHandler {
    static let kind = "echo"
    let runs: RunCounts

    func run(_ parameters: JSONValue, context: JobContext) async throws -> JSONValue {
        if let n = parameters["n"]?.intValue { runs.value.withLock { $0[n, default: 0] += 1 } }
        return parameters
    }
}

/// A value behind a lock, shared by reference (tasks and handler copies).
final class Locked<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ initial: Value) { value = Mutex(initial) }
    func withLock<T>(_ body: (inout Value) -> T) -> T { value.withLock { body(&$0) } }
}

/// Runs per `n`.
typealias RunCounts = Locked<[Int: Int]>

/// The outbox test: submissions keep being accepted while Redis is down, through a `kill -9` of the dispatcher, and
/// every accepted one runs exactly once when Redis is back.
@Suite("Outbox through a Redis outage and a dispatcher crash", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct OutboxProcessTests {
    enum Answer: Sendable {
        case accepted(id: String, status: Int, spooled: Bool)
        case refused(status: Int)
    }

    @Test(.timeLimit(.minutes(2)))
    func everyAcceptedSubmissionRunsExactlyOnceAndNoRefusedOneRuns() async throws {
        let clock = ContinuousClock()
        let began = clock.now
        let redis = try OwnRedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: redis.url))
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-outbox-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = OwnRedisServer.freePort()
        let arguments = [
            "--redis-url", redis.url, "--namespace", farm.configuration.namespace, "--port", "\(port)", "--replica", "r1",
            "--outbox", directory.appendingPathComponent("outbox.sqlite").path,
            "--redis-timeout", "300ms", "--breaker-open", "300ms", "--breaker-failures", "2",
            // Without API keys: a replica restarted while Redis is down cannot check a key it never saw.
            "--no-auth",
        ]
        var serve = try await SpoolingServeProcess(arguments, log: directory.appendingPathComponent("serve1.log"))
        let answers = Locked<[Int: Answer]>([:])
        let unexpected = Locked<[String]>([])

        /// Submits `range` from 8 concurrent clients; every 50th submission names an unknown tier (422).
        func submit(_ range: Range<Int>) async throws {
            let base = serve.base
            try await withThrowingTaskGroup(of: Void.self) { group in
                for client in 0..<8 {
                    group.addTask {
                        for n in stride(from: range.lowerBound + client, to: range.upperBound, by: 8) {
                            var request = URLRequest(url: URL(string: base + "/v1/jobs")!)
                            request.httpMethod = "POST"
                            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
                            let tier = n % 50 == 7 ? "gold" : "standard"
                            request.httpBody = Data(#"{"kind": "echo", "tier": "\#(tier)", "payload": {"n": \#(n)}}"#.utf8)
                            let (data, response) = try await URLSession.shared.data(for: request)
                            let status = (response as? HTTPURLResponse)?.statusCode ?? 0
                            let json = try? JSONValue(parsing: String(decoding: data, as: UTF8.self))
                            if status == 201 || status == 202, let id = json?["id"]?.stringValue {
                                answers.withLock { $0[n] = .accepted(id: id, status: status, spooled: json?["spooled"] == .bool(true)) }
                            } else {
                                answers.withLock { $0[n] = .refused(status: status) }
                                if status != 422 { unexpected.withLock { $0.append("\(n): \(status) \(String(decoding: data, as: UTF8.self).prefix(200))") } }
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        func accepted(_ range: Range<Int>) -> [(n: Int, id: String, status: Int, spooled: Bool)] {
            answers.withLock { answers in
                range.compactMap { n in
                    if case .accepted(let id, let status, let spooled)? = answers[n] { return (n, id, status, spooled) }
                    return nil
                }
            }
        }

        // 1. Redis up: straight into Redis. Every one is accepted; on a machine loaded enough that a call passes the
        // test's 300 ms Redis timeout twice, the breaker opens and a few are spooled (202) instead, which the
        // exactly-once count below covers as well.
        try await submit(0..<500)
        let direct = accepted(0..<500)
        #expect(direct.count == 490 && direct.allSatisfy { $0.status == 201 || ($0.status == 202 && $0.spooled) })
        #expect(direct.filter { $0.status == 201 }.count >= 400)
        // 2. Redis stopped: every valid submission is still accepted, into the outbox.
        redis.stop()
        try await submit(500..<1000)
        let spooledBeforeCrash = accepted(500..<1000)
        #expect(spooledBeforeCrash.count == 490 && spooledBeforeCrash.allSatisfy { $0.status == 202 && $0.spooled })
        // 3. The dispatcher is killed with jobs in its outbox, and started again (Redis still down).
        serve.kill9()
        serve = try await SpoolingServeProcess(arguments, log: directory.appendingPathComponent("serve2.log"))
        try await submit(1000..<1600)
        #expect(accepted(1000..<1600).allSatisfy { $0.status == 202 && $0.spooled }, "behind the jobs the crash left")
        // 4. Redis back: the outbox is forwarded while new submissions keep coming.
        try redis.start()
        try await submit(1600..<2000)
        let all = accepted(0..<2000)
        #expect(unexpected.withLock { $0 }.isEmpty, "only 2xx, and 422 for the invalid ones: \(unexpected.withLock { $0 }.prefix(5))")
        #expect(all.count == 2000 - 40)
        #expect(all.allSatisfy { $0.id.hasSuffix(".r1") })
        let submitted = clock.now - began

        // 5. A worker drains: every accepted submission runs exactly once, no refused one runs.
        let runs = RunCounts([:])
        var registry = HandlerRegistry()
        registry.register(CountingEcho(runs: runs))
        try await withTestWorker(farm: farm, registry: registry, queues: ["default"], concurrency: 32) { _ in
            let deadline = clock.now + .seconds(40)
            while clock.now < deadline, runs.value.withLock({ $0.count }) < all.count {
                try await Task.sleep(for: .milliseconds(50))
            }
            try await Task.sleep(for: .milliseconds(500))  // a second run of anything would show now
        }
        let counted = runs.value.withLock { $0 }
        let acceptedNumbers = Set(all.map(\.n))
        #expect(counted.count == all.count, "every accepted submission ran (\(counted.count) of \(all.count)); serve log:\n\(serve.output.suffix(2000))")
        #expect(counted.values.allSatisfy { $0 == 1 }, "none ran twice: \(counted.filter { $0.value > 1 }.prefix(5))")
        #expect(Set(counted.keys).isSubset(of: acceptedNumbers), "none that was refused ran: \(Set(counted.keys).subtracting(acceptedNumbers).sorted().prefix(5))")
        #expect(try await farm.status(id: spooledBeforeCrash[0].id)?.state == .succeeded, "under the id it was answered with")
        #expect(try await farm.stats(queues: ["default"]).first?.depth == 0)
        let ready = try await URLSession.shared.data(from: URL(string: serve.base + "/readyz")!)
        #expect(String(decoding: ready.0, as: UTF8.self).contains(#""outboxJobs":0"#))
        #expect(submitted < .seconds(60), "the submissions took \(submitted)")
    }
}
