import Foundation
import JobFarmTesting
import JobQueue
import Logging
import RedisClient
import Synchronization
import Testing
@testable import JobWorker

private var quietLogger: Logger {
    var logger = Logger(label: "test.classification")
    logger.logLevel = .critical
    return logger
}

/// Replies that mean "the whole server refuses", told apart from faults of one key, and what the fetch loop does
/// about each; the one wake-up signal the runtime and the library share.
@Suite("Fault classification", .timeLimit(.minutes(1)))
struct FaultClassificationTests {
    @Test func serverWideRepliesAreClassifiedWhereverTheyComeFrom() {
        let oom = "OOM command not allowed when used memory > 'maxmemory'. script: 0700a3, on @user_script:12."
        let readOnly = "READONLY You can't write against a read only replica. script: fdc659, on @user_script:1."
        let cases: [(RedisError, RedisServerCondition?)] = [
            (RedisError(reply: oom, script: "fetch"), .outOfMemory),
            (RedisError(reply: readOnly, script: "fetch"), .readOnly),
            (RedisError(reply: "READONLY You can't write against a read only replica.", context: "waiting for a wake-up (BLPOP)"), .readOnly),
            (RedisError(reply: "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."), .cannotPersist),
            (RedisError(reply: "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), .notReady),
            (RedisError(reply: "LOADING Redis is loading the dataset in memory"), .notReady),
            (RedisError(reply: "BUSYKEY Target key name already exists."), nil),
            (RedisError(reply: "JOBFARM_WRONGTYPE jf:{q}:inflight is a string, expected a zset", script: "fetch"), nil),
            (RedisError(reply: "ERR Error running script: OOMPH", script: "fetch"), nil),
            (.connectionLost("reset by peer"), nil),
        ]
        for (error, condition) in cases {
            #expect(error.serverCondition == condition, "\(error)")
            #expect(JobFarmError(error, operation: "fetch").serverCondition == condition, "\(error)")
        }
        // Not blamed on the script or the data: the advice is the server's.
        let classified = RedisError(reply: oom, script: "fetch")
        guard case .server(let text) = classified else {
            Issue.record("an OOM reply of a script is a server error, got \(classified)")
            return
        }
        #expect(text.hasPrefix("script fetch: OOM"))
        #expect(classified.description.contains("raise maxmemory"))
        #expect(RedisError(reply: "BUSY Redis is busy running a script.").isConnectionError, "retried like LOADING")
    }

    /// A server that refuses every queue pauses the fetch loop once, with a growing pause, and no queue is set aside.
    @Test func aServerWideFaultPausesTheWholeLoopWithAGrowingPause() async throws {
        let driver = FakeDriver()
        let refusal = JobFarmError(RedisError(reply: "READONLY You can't write against a read only replica.", script: "fetch"), operation: "fetch")
        driver.fetchBehaviour.withLock { behaviour in
            for queue in ["a", "b", "c"] { behaviour[queue] = { throw refusal } }
        }
        let stopping = Mutex(false)
        let loop = FetchLoop(
            driver: driver, configuration: WorkerConfiguration(queues: ["a", "b", "c"], concurrency: 4, idleWait: .milliseconds(50)),
            attempts: RunningAttempts(), logger: quietLogger,
            enginePause: QueueBackoff(initialPause: .milliseconds(50), maximumPause: .milliseconds(400)),
            isStopping: { stopping.withLock { $0 } }, beginShutdown: {}, start: { _ in })
        let task = Task { await loop.run() }
        try await Task.sleep(for: .milliseconds(1000))
        #expect(loop.faults.isEmpty, "no queue is set aside: \(loop.faults.keys.sorted())")
        #expect(loop.engineFault?.error == "a read-only replica (READONLY)")
        let fetches = driver.calls.withLock { $0.fetches }
        // One try per pause (the first queue's fetch ends the pass): 50 + 100 + 200 + 400 + 400 ms in 1 s.
        #expect((3...8).contains(fetches.count), "\(fetches.count) fetches in 1 s")
        #expect(Set(fetches) == ["a"])
        driver.fetchBehaviour.withLock { $0 = [:] }
        try await eventually(timeout: .seconds(2), "the pause to end") { loop.engineFault == nil }
        stopping.withLock { $0 = true }
        await task.value
    }

    /// Credentials refused after start are not retried: the loop hands the error to the worker (which stops) once.
    @Test func refusedCredentialsStopTheLoopInsteadOfRetrying() async throws {
        let driver = FakeDriver()
        let refusal = JobFarmError(RedisError.authenticationFailed("WRONGPASS invalid username-password pair"), operation: "fetch")
        driver.fetchBehaviour.withLock { $0["a"] = { throw refusal } }
        let stopping = Mutex(false)
        let refused = Mutex<[JobFarmError]>([])
        let loop = FetchLoop(
            driver: driver, configuration: WorkerConfiguration(queues: ["a"], concurrency: 4, idleWait: .milliseconds(50)),
            attempts: RunningAttempts(), logger: quietLogger,
            isStopping: { stopping.withLock { $0 } }, beginShutdown: {},
            refused: { error in
                refused.withLock { $0.append(error) }
                stopping.withLock { $0 = true }
            },
            start: { _ in })
        await loop.run()
        #expect(refused.withLock { $0 } == [refusal])
        #expect(driver.calls.withLock { $0.fetches.count } == 1)
    }

    @Test func theWakeUpSignalWaitsFiresAndTimesOut() async throws {
        let signal = AsyncSignal()
        signal.fire()
        signal.fire()
        await signal.wait()  // a fire before the wait is kept (once)
        let clock = ContinuousClock()
        var start = clock.now
        await signal.wait(upTo: .milliseconds(100))  // the two fires counted once: this one times out
        #expect(clock.now - start >= .milliseconds(90))
        start = clock.now
        let waiter = Task { await signal.wait(upTo: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(20))
        signal.fire()
        await waiter.value
        #expect(clock.now - start < .seconds(5), "a fire ends a timed wait early")
        // A timed-out wait leaves nothing behind: the next wait blocks until fired.
        await signal.wait(upTo: .milliseconds(10))
        let untimed = Task { await signal.wait() }
        try await Task.sleep(for: .milliseconds(50))
        signal.fire()
        await untimed.value
    }
}

/// A count shared by tasks and threads.
final class Tally: Sendable {
    private let value = Mutex(0)
    func add() { value.withLock { $0 += 1 } }
    var count: Int { value.withLock { $0 } }
}

/// The Redis client writes a request from the caller's thread when nothing else is under way on the connection and
/// reads the replies on its own queue: replies must still pair with their requests under any mix of callers.
@Suite("Redis client write path", .timeLimit(.minutes(2)), .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct RedisClientWritePathTests {
    @Test func concurrentCallersOnOneClientGetTheirOwnReplies() async throws {
        let client = RedisClient(configuration: try TestRedis.configuration, name: "write-path")
        defer { client.close() }
        let mismatches = Tally()
        await withTaskGroup(of: Void.self) { group in
            for caller in 0..<16 {
                group.addTask {
                    for index in 0..<50 {
                        let text = "c\(caller)-\(index)"
                        let replies = try? await client.send([RedisCommand("ECHO", text), RedisCommand("ECHO", text + "b")])
                        if replies?.map(\.string) != [text, text + "b"] { mismatches.add() }
                    }
                }
            }
            // A blocking caller on a thread of its own, interleaved with the async ones.
            group.addTask {
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    Thread {
                        for index in 0..<50 {
                            let reply = try? client.pipelineBlocking([.command(RedisCommand("ECHO", "t\(index)"))])
                            if reply?.first?.string != "t\(index)" { mismatches.add() }
                        }
                        done.resume()
                    }.start()
                }
            }
        }
        #expect(mismatches.count == 0)
    }

    @Test func aScriptFlushedUnderAnOpenConnectionIsReloaded() async throws {
        let client = RedisClient(configuration: try TestRedis.configuration, name: "write-path")
        defer { client.close() }
        let script = RedisScript(name: "answer", source: "return 'forty-two'")
        #expect(try await client.run(script, keys: [], arguments: []).string == "forty-two")
        _ = try await client.execute("SCRIPT", "FLUSH")
        // Written by the caller (the connection is idle and the SHA known), answered NOSCRIPT, reloaded on the queue.
        #expect(try await client.run(script, keys: [], arguments: []).string == "forty-two")
        let id = try #require(try await client.execute("CLIENT", "ID").int)
        let other = RedisClient(configuration: try TestRedis.configuration, name: "killer")
        defer { other.close() }
        _ = try await other.execute("CLIENT", "KILL", "ID", String(id))
        // The connection was closed under the client: the next call fails or reconnects, never hangs.
        _ = try? await client.execute("PING")
        #expect(try await client.execute("PING").string == "PONG")
        client.close()
        await #expect(throws: RedisError.self) { try await client.execute("PING") }
    }
}
