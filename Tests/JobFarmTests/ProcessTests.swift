import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// Worker processes (the real `jobfarm` binary) against a real Redis: crashes, signals, scale-out, restarts.
/// Serialized: each test loads both cores.
@Suite("Worker processes", .serialized, .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct ProcessTests {
    func workerArguments(_ farm: JobFarm, url: String? = nil, _ extra: [String] = []) -> [String] {
        ["worker", "--redis-url", url ?? TestRedis.url!, "--namespace", farm.configuration.namespace, "--queues", "default",
         "--log-level", "warning"] + extra
    }

    @Test func killNineMidJobRunsAgainWithin15Seconds() async throws {
        let farm = try TestRedis.farm()  // the default 10 s lease
        let id = try await farm.enqueue(EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(1)])))
        let first = try ChildProcess(workerArguments(farm))
        try await eventually(timeout: .seconds(15), "the job to start") { try await farm.status(id: id)?.state == .running }
        let clock = ContinuousClock()
        let killedAt = clock.now
        first.signal(SIGKILL)
        await first.waitForExit()
        let second = try ChildProcess(workerArguments(farm))
        let status = try await farm.wait(for: id, timeout: .seconds(20))
        let recovery = clock.now - killedAt
        second.signal(SIGTERM)
        await second.waitForExit()
        #expect(status.state == .succeeded)
        #expect(recovery < .seconds(15), "recovered after \(recovery)")
        #expect(status.attempts == 2)
        #expect(status.leaseLosses == 1)
        #expect(status.history.first?.outcome == "lease_lost")
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["succeeded"] == 1, "exactly one success recorded")
        #expect(stats.inflight == 0)
    }

    @Test func sigtermFinishesShortJobsAndHandsBackLongOnes() async throws {
        let farm = try TestRedis.farm()
        let short = try await farm.enqueue((0..<4).map { _ in EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(0.5)])) })
        let long = try await farm.enqueue((0..<2).map { _ in EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(60)])) })
        let worker = try ChildProcess(workerArguments(farm, ["--concurrency", "8", "--shutdown-grace", "1.5"]))
        try await eventually(timeout: .seconds(15), "all six jobs to run") {
            try await farm.stats(queues: ["default"])[0].inflight == 6
        }
        worker.signal(SIGTERM)
        let exit = await worker.waitForExit(timeout: .seconds(15))
        #expect(exit == 0, "worker output:\n\(worker.text)")
        for id in short { #expect(try await farm.status(id: id)?.state == .succeeded) }
        for id in long {
            let status = try #require(try await farm.status(id: id))
            #expect(status.state == .queued, "handed back, not lost")
            #expect(status.attempts == 0, "the interrupted attempt is not counted")
        }
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.inflight == 0)
        #expect(stats.depth == 2)
        #expect(try await farm.workers().isEmpty, "the worker deregistered")
        for id in long { #expect(try await farm.cancel(id: id) == .cancelled) }
    }

    @Test func fourWorkerProcessesRecordEveryJobExactlyOnce() async throws {
        let farm = try TestRedis.farm()
        let total = 40_000
        var ids: [String] = []
        for start in stride(from: 0, to: total, by: 10_000) {
            ids += try await farm.enqueue((start..<start + 10_000).map { EnqueueRequest(kind: "noop", payload: .number(Double($0))) })
        }
        #expect(Set(ids).count == total)
        let workers = try (0..<4).map { _ in
            try ChildProcess(workerArguments(farm, ["--concurrency", "32", "--exit-when-empty"]))
        }
        for worker in workers {
            let exit = await worker.waitForExit(timeout: .seconds(240))
            #expect(exit == 0, "worker output:\n\(worker.text)")
        }
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["succeeded"] == total)
        #expect(stats.dead == 0)
        #expect(stats.inflight == 0)
        #expect(stats.depth == 0)
        // Every job's own record says succeeded, once.
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        var succeeded = 0
        for start in stride(from: 0, to: total, by: 5000) {
            let replies = try await client.send(ids[start..<min(start + 5000, total)].map { RedisCommand("HMGET", keys.job($0), "state", "attempts") })
            for reply in replies {
                let fields = reply.array ?? []
                if fields.first?.string == "succeeded" && fields.last?.int == 1 { succeeded += 1 }
            }
        }
        #expect(succeeded == total)
    }

    @Test func redisRestartMidRunLosesNothing() async throws {
        let server = try OwnRedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let redis = try RedisConfiguration(url: server.url)
        let farm = try TestRedis.farm(leaseDuration: .seconds(3), heartbeat: .milliseconds(500), redis: redis)
        let total = 3000
        _ = try await farm.enqueue((0..<total).map { _ in EnqueueRequest(kind: "sleep", payload: .object(["seconds": .number(0.002), "steps": .number(1)])) })
        let workers = try (0..<2).map { _ in
            try ChildProcess(workerArguments(farm, url: server.url, ["--concurrency", "8", "--lease", "3"]))
        }
        try await eventually(timeout: .seconds(30), "some jobs to finish") {
            (try await farm.stats(queues: ["default"])[0].counters["succeeded"] ?? 0) > 200
        }
        server.stop()  // SIGTERM: Redis flushes its AOF and exits mid-run
        try await Task.sleep(for: .seconds(1))
        try server.start()
        try await eventually(timeout: .seconds(90), "every job to succeed after the restart") {
            let stats = try await farm.stats(queues: ["default"])[0]
            return (stats.counters["succeeded"] ?? 0) + stats.dead >= total && stats.inflight == 0
        }
        let stats = try await farm.stats(queues: ["default"])[0]
        #expect(stats.counters["succeeded"] == total)
        #expect(stats.dead == 0)
        #expect(stats.depth == 0)
        for worker in workers {
            #expect(worker.process.isRunning, "workers ride out the restart")
            worker.signal(SIGTERM)
            #expect(await worker.waitForExit(timeout: .seconds(15)) == 0)
        }
    }

    @Test func jobEnqueuedWithRedisCliFollowingTheProtocolDocRuns() async throws {
        let doc = try String(contentsOf: PackagePaths.root.appendingPathComponent("docs/PROTOCOL.md"), encoding: .utf8)
        let enqueue = try #require(codeBlock(doc, info: "sh foreign-enqueue"), "docs/PROTOCOL.md has no ```sh foreign-enqueue block")
        let result = try #require(codeBlock(doc, info: "sh foreign-result"), "docs/PROTOCOL.md has no ```sh foreign-result block")
        let farm = try TestRedis.farm()
        let port = try #require(TestRedis.url?.split(separator: ":").last.map(String.init))
        func adapt(_ script: String) -> String {
            // The namespace, and the port of the test server for each command (the lines that start with redis-cli).
            script.replacingOccurrences(of: "jf:", with: "\(farm.configuration.namespace):")
                .split(separator: "\n", omittingEmptySubsequences: false)
                .map { $0.hasPrefix("redis-cli ") ? "redis-cli -p \(port) " + $0.dropFirst("redis-cli ".count) : String($0) }
                .joined(separator: "\n")
        }
        _ = try shell(adapt(enqueue))
        let status = try await withWorker(farm: farm) { _ in try await farm.wait(for: "ext-0001", timeout: .seconds(10)) }
        #expect(status.state == .succeeded)
        #expect(status.kind == "echo")
        #expect(status.result == .object(["hello": .string("from redis-cli")]))
        let output = try shell(adapt(result))
        #expect(output.contains("succeeded"))
        #expect(output.contains("{\"hello\":\"from redis-cli\"}"))
    }

    @Test func authenticatesWithACLUserOverAUnixSocket() async throws {
        let server = try OwnRedisServer(extraArguments: ["--user", "default", "off", "--user", "farm", "on", ">s3cret", "~*", "&*", "+@all"])
        server.authUser = "farm"
        server.authPassword = "s3cret"
        let good = try RedisConfiguration(url: "unix://\(server.socketPath)?user=farm&password=s3cret")
        let farm = try TestRedis.farm(redis: good)
        let id = try await farm.enqueue(EnqueueRequest(kind: "echo", payload: .string("authenticated")))
        let status = try await withWorker(farm: farm) { _ in try await farm.wait(for: id, timeout: .seconds(10)) }
        #expect(status.result == .string("authenticated"))
        let tcp = try TestRedis.farm(redis: try RedisConfiguration(url: "redis://farm:s3cret@127.0.0.1:\(server.port)/3"))
        #expect(try await tcp.queues().isEmpty, "database 3 is empty")
        let bad = RedisClient(configuration: try RedisConfiguration(url: "redis://farm:wrong@127.0.0.1:\(server.port)"))
        await #expect(throws: RedisError.self) { try await bad.execute("PING") }
    }

    @Test func clientReconnectsAfterTheServerComesBack() async throws {
        let server = try OwnRedisServer()
        let client = RedisClient(configuration: try RedisConfiguration(url: server.url))
        #expect(try await client.execute("PING") == .status("PONG"))
        server.stop()
        await #expect(throws: RedisError.self) { try await client.execute("PING") }
        try server.start()
        try await eventually(timeout: .seconds(5), "the reconnect") { (try? await client.execute("PING")) == .status("PONG") }
    }
}

/// The body of the first fenced block with this info string.
func codeBlock(_ markdown: String, info: String) -> String? {
    guard let start = markdown.range(of: "```\(info)\n") else { return nil }
    guard let end = markdown.range(of: "\n```", range: start.upperBound..<markdown.endIndex) else { return nil }
    return String(markdown[start.upperBound..<end.lowerBound])
}

/// Runs a bash script; returns its standard output, throws on a non-zero exit.
@discardableResult
func shell(_ script: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = ["-c", script]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let output = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0 else { throw TestFailure("script failed (\(process.terminationStatus)): \(output)") }
    return output
}
