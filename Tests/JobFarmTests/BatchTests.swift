import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Pipelines
import RedisClient
import Testing

/// Batches against the real Redis (docs/PROTOCOL.md §17): per-queue parts moved by the scripts that move a job,
/// callbacks fired once through their markers.
@Suite("Batches", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct BatchTests {
    static let done = BatchCallback(kind: "noop", queue: "callbacks", payload: .object(["which": .string("complete")]))
    static let allGood = BatchCallback(kind: "noop", queue: "callbacks", payload: .object(["which": .string("success")]))

    /// Leases and reports every job of `queue` in rounds of up to 1,000: the ids in `dead` die, the rest succeed.
    static func drain(_ farm: JobFarm, queue: String, dead: Set<String> = [], on client: RedisClient) async throws -> Int {
        var reported = 0
        while true {
            let jobs = try await farm.fetch(queue: queue, count: 1000, worker: "w", on: client)
            if jobs.isEmpty { return reported }
            let outcomes: [(job: LeasedJob, outcome: AttemptOutcome)] = jobs.map { job in
                (job, dead.contains(job.id) ? .dead(reason: .nonRetryable, error: "broken on purpose") : .succeeded(result: "{}"))
            }
            let refused = try await farm.report(outcomes, queue: queue, on: client)
            #expect(refused.isEmpty)
            reported += jobs.count
        }
    }

    static func callbacks(_ farm: JobFarm) async throws -> Int {
        try await farm.stats(queues: ["callbacks"])[0].counters["enqueued"] ?? 0
    }

    @Test(.timeLimit(.minutes(2))) func tenThousandJobsWithSomeDeadFireTheCompletionCallbackOnceAndTheSuccessCallbackNever() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: farm.configuration.redis, name: "batch")
        defer { client.close() }
        let jobs = (0..<10_000).map { EnqueueRequest(kind: "noop", queue: $0 % 2 == 0 ? "a" : "b", payload: .object(["i": .number(Double($0))])) }
        let batch = try await farm.createBatch(id: "b10k", jobs: jobs, onComplete: Self.done, onSuccess: Self.allGood)
        #expect(batch.created && batch.jobs.count == 10_000 && batch.jobs.allSatisfy { !$0.duplicate })
        var status = try #require(try await farm.batchStatus("b10k"))
        #expect(status.sealed && status.consistent)
        #expect(status.counts.total == 10_000 && status.counts.pending == 10_000)
        #expect(status.parts["a"]?.total == 5_000 && status.parts["b"]?.total == 5_000)
        let dead = Set(stride(from: 7, to: 10_000, by: 1000).map { batch.jobs[$0].id })
        #expect(dead.count == 10)
        // Checkers running side by side with the reports, as many workers and maintenance loops would.
        let checkers = Task {
            var fired = 0
            while !Task.isCancelled {
                let results = try await withThrowingTaskGroup(of: BatchCheck.self) { group in
                    for _ in 0..<4 { group.addTask { try await farm.checkBatch("b10k") } }
                    return try await group.reduce(into: [BatchCheck]()) { $0.append($1) }
                }
                fired += results.filter(\.firedComplete).count
                try await Task.sleep(for: .milliseconds(5))
            }
            return fired
        }
        async let drainedA = Self.drain(farm, queue: "a", dead: dead, on: client)
        let otherClient = RedisClient(configuration: farm.configuration.redis, name: "batch-b")
        defer { otherClient.close() }
        async let drainedB = Self.drain(farm, queue: "b", dead: dead, on: otherClient)
        let drained = try await drainedA + drainedB
        #expect(drained == 10_000)
        try await eventually("the completion callback is enqueued") { try await Self.callbacks(farm) >= 1 }
        checkers.cancel()
        _ = try? await checkers.value
        // However often the checker runs again, nothing more fires.
        for _ in 0..<20 { #expect(try await farm.checkBatch("b10k") == BatchCheck()) }
        for queue in ["a", "b"] { try await farm.checkBatches(queue: queue) }
        status = try #require(try await farm.batchStatus("b10k"))
        #expect(status.counts.succeeded == 9_990 && status.counts.dead == 10 && status.counts.isFinal)
        #expect(status.completeFiredAt != nil && status.successFiredAt == nil)
        #expect(try await Self.callbacks(farm) == 1)
        #expect(try await farm.status(id: "b10k.complete", queue: "callbacks")?.state == .queued)
        #expect(try await farm.status(id: "b10k.success", queue: "callbacks") == nil)
    }

    @Test func aRequeuedDeadJobThatSucceedsFiresTheSuccessCallbackOnce() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: farm.configuration.redis, name: "batch")
        defer { client.close() }
        let batch = try await farm.createBatch(jobs: (0..<5).map { _ in EnqueueRequest(kind: "noop") },
                                               onComplete: Self.done, onSuccess: Self.allGood)
        let doomed = batch.jobs[2].id
        _ = try await Self.drain(farm, queue: "default", dead: [doomed], on: client)
        var status = try #require(try await farm.batchStatus(batch.id))
        #expect(status.counts.dead == 1 && status.completeFiredAt != nil && status.successFiredAt == nil)
        #expect(try await Self.callbacks(farm) == 1)
        // Requeued: it counts again (pending), and the batch is not final any more.
        guard case .requeued = try await farm.requeue(id: doomed, queue: "default") else { Issue.record("not requeued"); return }
        status = try #require(try await farm.batchStatus(batch.id))
        #expect(status.counts.dead == 0 && status.counts.pending == 1 && !status.counts.isFinal)
        _ = try await Self.drain(farm, queue: "default", on: client)
        status = try #require(try await farm.batchStatus(batch.id))
        #expect(status.counts.succeeded == 5 && status.successFiredAt != nil)
        #expect(try await Self.callbacks(farm) == 2)
        #expect(try await farm.status(id: "\(batch.id).success", queue: "callbacks") != nil)
        #expect(try await farm.checkBatch(batch.id) == BatchCheck())
        #expect(try await Self.callbacks(farm) == 2)
    }

    @Test(arguments: TestRedis.servers) func aBatchAcrossQueuesRunByWorkersFiresBothCallbacksOnce(server: TestServer) async throws {
        let farm = try TestRedis.farm(on: server)
        // Queue names chosen so that on the cluster their keys live in different slots (and, with 3 masters, nodes).
        let queues = ["left", "right", "middle"]
        if server == .cluster {
            let slots = Set(queues.map { ClusterSlot.of("\(farm.configuration.namespace):{\($0)}:t:standard") })
            #expect(slots.count == 3)
        }
        let jobs = (0..<300).map { EnqueueRequest(kind: $0 % 3 == 0 ? "echo" : "noop", queue: queues[$0 % 3], payload: .object(["i": .number(Double($0))])) }
        let batch = try await farm.createBatch(jobs: jobs, onComplete: Self.done, onSuccess: Self.allGood, seal: false)
        // Open: more jobs can join, and nothing fires while it is open, even with every job ended.
        try await withWorker(farm: farm, queues: queues) { _ in
            try await eventually("the first jobs end") { try await farm.batchStatus(batch.id)?.counts.isFinal == true }
            _ = try await farm.enqueue([EnqueueRequest(kind: "noop", queue: "left")], batch: batch.id)
            #expect(try await farm.checkBatch(batch.id) == BatchCheck())
            try await farm.sealBatch(batch.id)
            try await eventually("both callbacks fire") {
                let status = try await farm.batchStatus(batch.id)
                return status?.completeFiredAt != nil && status?.successFiredAt != nil
            }
        }
        await #expect(throws: JobFarmError.self) { try await farm.enqueue([EnqueueRequest(kind: "noop")], batch: batch.id) }
        let status = try #require(try await farm.batchStatus(batch.id))
        #expect(status.counts.total == 301 && status.counts.succeeded == 301 && status.parts.count == 3)
        #expect(status.parts["left"]?.total == 101)
        #expect(try await Self.callbacks(farm) == 2)
    }

    @Test func cancelledAndRetriedJobsAreCounted() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: farm.configuration.redis, name: "batch")
        defer { client.close() }
        let batch = try await farm.createBatch(jobs: (0..<3).map { _ in EnqueueRequest(kind: "noop") }, onComplete: Self.done, onSuccess: Self.allGood)
        #expect(try await farm.cancel(id: batch.jobs[0].id) == .cancelled)
        var leased = try await farm.fetch(queue: "default", count: 10, worker: "w", on: client)
        #expect(leased.count == 2)
        var status = try #require(try await farm.batchStatus(batch.id))
        #expect(status.counts.cancelled == 1 && status.counts.running == 2 && status.counts.pending == 0)
        // One retried at once (back to pending), one succeeds.
        _ = try await farm.report([(leased[0], .retry(error: "again", delay: .zero)), (leased[1], .succeeded(result: "1"))], queue: "default", on: client)
        status = try #require(try await farm.batchStatus(batch.id))
        #expect(status.counts.pending == 1 && status.counts.running == 0 && status.counts.succeeded == 1)
        leased = try await farm.fetch(queue: "default", count: 10, worker: "w", on: client)
        _ = try await farm.report([(leased[0], .succeeded(result: "2"))], queue: "default", on: client)
        status = try #require(try await farm.batchStatus(batch.id))
        #expect(status.counts.succeeded == 2 && status.counts.cancelled == 1 && status.counts.total == 3)
        #expect(status.completeFiredAt != nil && status.successFiredAt == nil)
    }

    @Test func aForEachStepOverManyItemsEndsOnceWithEveryResult() async throws {
        let farm = try TestRedis.farm()
        let count = 500
        let pipeline = try ValidatedPipeline.validate(yaml: """
            name: wide
            params:
              shards: [\((0..<count).map { "\"s\($0)\"" }.joined(separator: ", "))]
            steps:
              - id: fan
                kind: echo
                for_each: ${params.shards}
                payload: {shard: "${item}"}
              - id: after
                kind: echo
                needs: [fan]
                payload: {n: 1}
            """, file: "wide.yaml", knownKinds: nil)
        try await withWorker(farm: farm, concurrency: 8) { _ in
            let run = try await farm.startRun(pipeline)
            try await eventually(timeout: .seconds(60), "the run ends") { try await farm.runStatus(run.runID)?.isFinal == true }
            let status = try #require(try await farm.runStatus(run.runID))
            #expect(status.state == "succeeded")
            let fan = try #require(status.steps.first { $0.id == "fan" })
            #expect(fan.items == count && fan.endedItems == count)
            #expect(fan.result?.items.compactMap { $0["shard"]?.stringValue } == (0..<count).map { "s\($0)" })
            // The child ran once.
            #expect(try await farm.stats(queues: ["default"])[0].counters["succeeded"] == count + 1)
        }
    }
}

/// `jobfarm batch create|seal|status` and `enqueue --batch`, through the binary (the README's sample file).
@Suite("Batch commands", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct BatchCLITests {
    func jobfarm(_ farm: JobFarm, _ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let child = try ChildProcess(arguments + ["--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace])
        let status = await child.waitForExit(timeout: .seconds(30))
        return (status, child.text)
    }

    @Test(.timeLimit(.minutes(1))) func createEnqueueSealAndStatus() async throws {
        let farm = try TestRedis.farm()
        let file = PackagePaths.root.appendingPathComponent("jobs/batch-sample.jsonl").path
        let created = try await jobfarm(farm, ["batch", "create", "--file", file, "--id", "sample",
                                               "--on-complete", #"{"kind": "echo", "queue": "callbacks", "payload": {"batch": "done"}}"#])
        #expect(created.status == 0 && created.output.contains("sample"), "\(created.output)")
        let open = try await jobfarm(farm, ["batch", "create", "--id", "later", "--open"])
        #expect(open.status == 0, "\(open.output)")
        let added = try await jobfarm(farm, ["enqueue", "--kind", "noop", "--count", "3", "--batch", "later"])
        #expect(added.status == 0, "\(added.output)")
        let unknown = try await jobfarm(farm, ["enqueue", "--kind", "noop", "--batch", "nope"])
        #expect(unknown.status != 0 && unknown.output.contains("no batch nope"), "\(unknown.output)")
        try await withWorker(farm: farm) { _ in
            let waited = try await jobfarm(farm, ["batch", "status", "sample", "--wait", "--timeout", "20"])
            #expect(waited.status == 0, "\(waited.output)")
            #expect(waited.output.contains("batch sample: complete"), "\(waited.output)")
            #expect(waited.output.contains("10/10 ended"), "\(waited.output)")
            #expect(waited.output.contains("on complete: echo on callbacks, job sample.complete, fired"), "\(waited.output)")
            let shown = try await jobfarm(farm, ["batch", "status", "later"])
            #expect(shown.output.contains("batch later: open"), "\(shown.output)")
            let sealed = try await jobfarm(farm, ["batch", "seal", "later"])
            #expect(sealed.status == 0 && sealed.output.contains("sealed later"), "\(sealed.output)")
            let after = try await jobfarm(farm, ["batch", "status", "later", "--wait", "--timeout", "20"])
            #expect(after.status == 0 && after.output.contains("3/3 ended"), "\(after.output)")
        }
        #expect(try await farm.status(id: "sample.complete", queue: "callbacks") != nil)
    }
}
