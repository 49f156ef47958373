import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// The real `jobfarm` binary, its standard output and error apart, killed after `timeout`.
struct CommandRun {
    var status: Int32?
    var output: String
    var errors: String

    init(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(30)) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: PackagePaths.jobfarm)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["JOBFARM_BLAS_AUTOTUNE"] = "0"
        env["JOBFARM_KERNEL_CALIBRATION"] = "0"
        env.removeValue(forKey: "JOBFARM_REDIS_URL")
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            status = nil
        } else {
            status = process.terminationStatus
        }
        output = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        errors = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }
}

/// Numeric options: a wrong value is named with the rule and the value given, before anything connects.
@Suite("CLI option checks", .timeLimit(.minutes(2)))
struct CLIOptionCheckTests {
    /// Nothing listens here: the checks must fail before any connection is tried.
    let url = "redis://127.0.0.1:\(OwnRedisServer.freePort())"

    @Test func negativeAndZeroValuesSayWhatIsWrong() async throws {
        let cases: [([String], String)] = [
            (["enqueue", "--kind", "noop", "--count", "-5"], "--count must be at least 1, got -5"),
            (["enqueue", "--kind", "noop", "--count", "0"], "--count must be at least 1, got 0"),
            (["enqueue", "--kind", "noop", "--delay", "-3"], "--delay must be at least 0 seconds, got -3"),
            (["enqueue", "--kind", "noop", "--timeout", "0"], "--timeout must be more than 0 seconds, got 0"),
            (["enqueue", "--kind", "noop", "--timeout", "nan"], "--timeout must be a number of seconds, got nan"),
            (["enqueue", "--kind", "noop", "--max-attempts", "-1"], "--max-attempts must be at least 1, got -1"),
            (["enqueue", "--kind", "noop", "--max-attempts", "5000"], "--max-attempts must be at most 1000, got 5000"),
            (["worker", "--concurrency", "-2"], "--concurrency must be at least 1, got -2"),
            (["worker", "--fetch-batch", "0"], "--fetch-batch must be at least 1, got 0"),
            (["worker", "--shutdown-grace", "-1"], "--shutdown-grace must be at least 0 seconds, got -1"),
            (["stats", "--lease", "-10"], "--lease must be at least 1 second, got -10"),
            (["status", "some-id", "--timeout", "-1"], "--timeout must be more than 0 seconds, got -1"),
            (["dlq", "list", "--limit", "-1"], "--limit must be at least 1, got -1"),
            (["dlq", "list", "--since-seconds", "-60"], "--since-seconds must be more than 0 seconds, got -60"),
            (["dlq", "requeue", "--all", "--rate", "-5"], "--rate must be more than 0 letters per second, got -5"),
            (["bench", "queue", "--jobs", "-1"], "--jobs must be at least 1, got -1"),
            (["bench", "queue", "--workers", "1,-2"], "--workers: each value must be at least 1, got -2"),
            (["bench", "queue", "--queues", "2,0"], "--queues: each value must be at least 1, got 0"),
            (["bench", "blas", "--compute-nice", "40"], "--compute-nice must be at most 19, got 40"),
            (["blas-probe", "--rounds", "0"], "--rounds must be at least 1, got 0"),
        ]
        for (arguments, message) in cases {
            let global = arguments[0] == "blas-probe" ? [] : ["--redis-url", url]
            let run = try await CommandRun(arguments + global, timeout: .seconds(20))
            #expect(run.status == 64, "\(arguments): exit \(String(describing: run.status))")
            #expect(run.errors.contains(message), "\(arguments): \(run.errors)")
            #expect(!run.errors.contains("Missing value"), "\(arguments)")
        }
    }

    @Test func jobFileValuesGetTheSameChecks() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-bad-\(UUID().uuidString).json")
        try Data(#"{"kind": "noop", "count": -3}"#.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let run = try await CommandRun(["enqueue", "--file", file.path, "--redis-url", url])
        #expect(run.status != 0)
        #expect(run.errors.contains("\"count\" in \(file.path) must be at least 1, got -3"), "\(run.errors)")
    }

    @Test func anInvalidURLIsAUsageError() async throws {
        let run = try await CommandRun(["enqueue", "--kind", "noop", "--redis-url", "redis://:hunter2@127.0.0.1:abc"])
        #expect(run.status == 64)
        #expect(run.errors.contains("--redis-url: invalid Redis URL: port 'abc'"), "\(run.errors)")
        #expect(!run.errors.contains("hunter2"))
    }
}

/// What `jobfarm` says about passwords, databases, unreachable servers and kinds no worker runs, against real Redis
/// servers (the test server, and one of the test's own with a password).
@Suite("CLI errors", .serialized, .timeLimit(.minutes(3)), .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct CLIErrorTests {
    @Test func enqueueSaysWhatToDoAboutPasswordsAndDatabases() async throws {
        let server = try OwnRedisServer(extraArguments: ["--requirepass", "s3cret"])
        server.authPassword = "s3cret"
        let missing = try await CommandRun(["enqueue", "--kind", "noop", "--redis-url", server.url])
        #expect(missing.status == 78)
        #expect(missing.errors.contains("this Redis needs a password: add it to --redis-url (redis://:PASSWORD@host:port) or JOBFARM_REDIS_URL"), "\(missing.errors)")
        let wrong = try await CommandRun(["enqueue", "--kind", "noop", "--redis-url", "redis://:nope@127.0.0.1:\(server.port)"])
        #expect(wrong.status == 78)
        #expect(wrong.errors.contains("refused the password"), "\(wrong.errors)")
        #expect(!wrong.errors.contains("nope"), "the password is not echoed")
        let database = try await CommandRun(["enqueue", "--kind", "noop", "--redis-url", try #require(TestRedis.url) + "/99"])
        #expect(database.status == 78)
        #expect(database.errors.contains("no database 99: it has 16 (0…15)"), "\(database.errors)")
        #expect(!database.errors.contains("authentication"))
    }

    @Test func workerFailsFastOnPasswordDatabaseAndURLErrors() async throws {
        let server = try OwnRedisServer(extraArguments: ["--requirepass", "s3cret"])
        server.authPassword = "s3cret"
        let testURL = try #require(TestRedis.url)
        let cases: [(String, Int32, String)] = [
            ("redis://:nope@127.0.0.1:\(server.port)", 78, "refused the password"),
            (server.url, 78, "this Redis needs a password"),
            (testURL + "/99", 78, "no database 99"),
            ("redis://127.0.0.1:notaport", 64, "invalid Redis URL"),
        ]
        for (url, status, message) in cases {
            let run = try await CommandRun(["worker", "--redis-url", url, "--queues", "default"], timeout: .seconds(20))
            #expect(run.status == status, "\(url): exit \(String(describing: run.status)); \(run.errors)")
            #expect(run.errors.contains(message), "\(url): \(run.errors)")
            #expect(!run.errors.contains("worker starting"), "\(url): the worker was not built")
        }
    }

    @Test func workerWaitsForAnUnreachableRedisWithACountdownThenStarts() async throws {
        let server = try OwnRedisServer()
        server.stop()
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: server.url))
        let worker = try ChildProcess([
            "worker", "--redis-url", server.url, "--namespace", farm.configuration.namespace, "--queues", "default", "--log-level", "info",
        ])
        try await eventually(timeout: .seconds(10), "two logged retries") {
            worker.text.contains("unreachable: retrying in 1 s (attempt 2)")
        }
        #expect(worker.text.contains("Redis at \(server.url)/0 unreachable: retrying in 0.5 s (attempt 1)"), "\(worker.text)")
        #expect(!worker.text.contains("worker starting"))
        try server.start()
        try await eventually(timeout: .seconds(15), "the worker to start once Redis answers") { worker.text.contains("worker starting") }
        let id = try await farm.enqueue(EnqueueRequest(kind: "echo", payload: .string("after the wait")))
        let status = try await farm.wait(for: id, timeout: .seconds(15))
        #expect(status.result == .string("after the wait"))
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test func sigtermWhileWaitingForRedisExits() async throws {
        let port = OwnRedisServer.freePort()
        let worker = try ChildProcess(["worker", "--redis-url", "redis://127.0.0.1:\(port)", "--queues", "default"])
        try await eventually(timeout: .seconds(10), "a logged retry") { worker.text.contains("retrying in") }
        worker.signal(SIGTERM)
        #expect(await worker.waitForExit(timeout: .seconds(10)) == 0, "\(worker.text)")
        #expect(worker.text.contains("stopped while waiting for Redis"))
    }

    @Test func enqueueWarnsAboutKindsNoLiveWorkerRunsAndStrictRefuses() async throws {
        let farm = try TestRedis.farm()
        let url = try #require(TestRedis.url)
        let common = ["--redis-url", url, "--namespace", farm.configuration.namespace]
        // No live worker at all: the job is accepted and waits.
        let waiting = try await CommandRun(["enqueue", "--kind", "noop", "--queue", "default"] + common)
        #expect(waiting.status == 0)
        #expect(waiting.errors.contains("no live worker serves queue 'default': the job waits until a worker serving it starts"), "\(waiting.errors)")
        #expect(JobID.isValid(waiting.output.trimmingCharacters(in: .whitespacesAndNewlines)), "stdout holds the id alone")
        try await withWorker(farm: farm) { _ in
            try await eventually(timeout: .seconds(10), "the worker's registration") { try await farm.workers().isEmpty == false }
            #expect(try await farm.coverage(ofKind: "echo", queue: "default") == .served)
            #expect(try await farm.coverage(ofKind: "echo", queue: "elsewhere") == .noLiveWorker)
            guard case .notServed(let kinds, 1) = try await farm.coverage(ofKind: "ecoh", queue: "default") else {
                Issue.record("a kind no worker runs is reported as such")
                return
            }
            #expect(kinds.contains("echo") && kinds.contains("noop"))
            let before = try await farm.stats(queues: ["default"]).first?.counters["enqueued"] ?? 0
            // A typo in the kind: accepted with a warning naming the kind, the queue and the kinds served.
            let warned = try await CommandRun(["enqueue", "--kind", "ecoh", "--queue", "default"] + common)
            #expect(warned.status == 0)
            #expect(warned.errors.contains("no live worker of queue 'default' runs kind 'ecoh'"), "\(warned.errors)")
            #expect(warned.errors.contains("echo"))
            // --strict refuses and enqueues nothing.
            let refused = try await CommandRun(["enqueue", "--kind", "ecoh", "--queue", "default", "--strict", "--count", "3"] + common)
            #expect(refused.status == 3)
            #expect(refused.errors.contains("Nothing enqueued (--strict)"), "\(refused.errors)")
            #expect(refused.output.isEmpty)
            let after = try await farm.stats(queues: ["default"]).first?.counters["enqueued"] ?? 0
            #expect(after == before + 1, "only the warned job was enqueued")
            // A kind the worker runs: no warning.
            let fine = try await CommandRun(["enqueue", "--kind", "echo", "--queue", "default", "--strict"] + common)
            #expect(fine.status == 0)
            #expect(fine.errors.isEmpty, "\(fine.errors)")
        }
    }
}
