import Dispatcher
import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import ModelStore
import Compute
import RedisClient
import Testing

/// The routes over a real server on a loopback port and the real Redis of scripts/test; every answer is also
/// checked against docs/openapi.yaml by `DispatcherClient`.
@Suite("Dispatcher over HTTP", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct DispatcherHTTPTests {
    @Test(.timeLimit(.minutes(1)))
    func submitShowWaitWokenByAWorkerAndQueues() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            let created = try await api.post("/v1/jobs", #"{"kind": "echo", "tier": "premium", "payload": {"hello": [1, 2]}}"#)
            #expect(created.status == 201)
            let id = try #require(created.json?["id"]?.stringValue)
            #expect(created.headers["location"] == "/v1/jobs/\(id)")
            #expect(created.json?["queue"] == .string("default"))
            #expect(created.json?["state"] == .string("queued"))
            #expect(created.json?["workersServing"] == .number(0), "no worker runs yet")

            let shown = try await api.get("/v1/jobs/\(id)")
            #expect(shown.status == 200)
            #expect(shown.json?["state"] == .string("queued"))
            #expect(shown.json?["tier"] == .string("premium"))
            #expect(shown.json?["enqueuedAt"]?.stringValue != nil)

            let queues = try await api.get("/v1/queues")
            let names = items(queues.json?["queues"]).compactMap { $0["name"]?.stringValue }
            #expect(names == ["default", "ml"], "the known queue and the routing table's")
            let defaultQueue = items(queues.json?["queues"]).first ?? .null
            #expect(defaultQueue["depth"] == .number(1))

            // A waiter parked before the worker starts is woken by the job's `succeeded` event.
            let clock = ContinuousClock()
            let start = clock.now
            let waited = try await withTestWorker(farm: farm, registry: .builtins(), queues: ["default"], concurrency: 2) { _ in
                try await api.get("/v1/jobs/\(id)/wait?timeout=20s")
            }
            #expect(waited.status == 200)
            #expect(waited.json?["state"] == .string("succeeded"))
            #expect(waited.json?["result"] == .object(["hello": .array([.number(1), .number(2)])]))
            #expect(waited.json?["progress"] == .number(1))
            #expect(waited.json?["finishedAt"]?.stringValue != nil)
            #expect(clock.now - start < .seconds(10), "woken by the event, long before the 20 s timeout")

            let again = try await api.call("DELETE", "/v1/jobs/\(id)")
            #expect(again.json?["outcome"] == .string("already_finished"))
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func waitTimesOutWithTheCurrentStateAndCancelEndsAPendingJob() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            let id = try #require(try await api.post("/v1/jobs", #"{"kind": "sleep", "payload": {"seconds": 1}, "delaySeconds": 60}"#).json?["id"]?.stringValue)
            let clock = ContinuousClock()
            let start = clock.now
            let waited = try await api.get("/v1/jobs/\(id)/wait?timeout=300ms")
            #expect(waited.status == 200)
            #expect(waited.json?["state"] == .string("scheduled"))
            #expect(clock.now - start >= .milliseconds(250))
            // The delayed job counts as delayed, not retrying, and is not due yet.
            let queue = items(try await api.get("/v1/queues").json?["queues"]).first { $0["name"] == .string("default") } ?? .null
            #expect(queue["scheduled"] == .number(1) && queue["delayed"] == .number(1))
            #expect(queue["retrying"] == .number(0) && queue["dueNow"] == .number(0))
            let cancelled = try await api.call("DELETE", "/v1/jobs/\(id)")
            #expect(cancelled.status == 200)
            #expect(cancelled.json?["outcome"] == .string("cancelled"))
            #expect(try await api.get("/v1/jobs/\(id)").json?["state"] == .string("cancelled"))
            let bad = try await api.get("/v1/jobs/\(id)/wait?timeout=forever")
            #expect(bad.status == 400)
            #expect(items(bad.json?["errors"]).first?["parameter"] == .string("timeout"))
            #expect(try await api.get("/v1/jobs/\(id)/wait?timeout=61s").status == 400, "over the longest wait")
            #expect(try await api.get("/v1/jobs/\(id)/wait?timeout=99999999999999999999").status == 400, "too large to convert")
        }
    }

    @Test func unknownJobsAndRoutesAre404Problems() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            for path in ["/v1/jobs/01JUNKNOWN00000000000000", "/v1/jobs/not%20an%20id", "/v1/jobs/01JUNKNOWN00000000000000/wait?timeout=1s"] {
                let answer = try await api.get(path)
                #expect(answer.status == 404, "\(path)")
                #expect(answer.contentType == "application/problem+json")
                #expect(answer.json?["status"] == .number(404))
            }
            #expect(try await api.call("DELETE", "/v1/jobs/01JUNKNOWN00000000000000").status == 404)
            let route = try await api.call("GET", "/v1/nothing", checkContract: false)
            #expect(route.status == 404)
            #expect(route.contentType == "application/problem+json")
            // Under /v2, the Open Inference Protocol's error shape.
            let inference = try await api.call("GET", "/v2/nothing", checkContract: false)
            #expect(inference.status == 404 && inference.contentType == "application/json")
            #expect(inference.json?["error"]?.stringValue?.contains("no route GET /v2/nothing") == true)
        }
    }

    @Test func badBodiesGet400413415And422WithEveryProblem() async throws {
        let farm = try TestRedis.farm()
        var configuration = DispatcherConfiguration(port: 0, authentication: .disabled)
        configuration.bodyLimitBytes = 2048
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            let malformed = try await api.post("/v1/jobs", #"{"kind": "echo",}"#)
            #expect(malformed.status == 400)
            #expect(malformed.json?["detail"]?.stringValue?.contains("byte") == true)
            #expect(try await api.post("/v1/jobs", "").status == 400)

            let large = try await api.post("/v1/jobs", #"{"kind": "echo", "payload": ""# + String(repeating: "x", count: 4000) + #""}"#)
            #expect(large.status == 413)

            let wrongType = try await api.call("POST", "/v1/jobs", json: #"{"kind": "echo"}"#, contentType: "text/plain")
            #expect(wrongType.status == 415)
            #expect(try await api.call("POST", "/v1/jobs:bulk", json: #"{"jobs": []}"#, contentType: nil).status == 415)

            let invalid = try await api.post("/v1/jobs", """
                {"kind": "resize", "tier": "gold", "maxAttempts": "3", "runAt": "2030-01-01T00:00:00Z", "delaySeconds": 5, "colour": 1}
                """)
            #expect(invalid.status == 422)
            #expect(invalid.contentType == "application/problem+json")
            #expect(invalid.pointers == ["/colour", "/kind", "/maxAttempts", "/runAt", "/tier"])
            #expect(try await farm.stats(queues: ["default"]).first?.depth == 0, "nothing invalid reached Redis")
        }
    }

    @Test func bulkIsAllOrNothing() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            let refused = try await api.post("/v1/jobs:bulk", """
                {"jobs": [{"kind": "echo"}, {"kind": "resize"}, {"kind": "noop", "maxAttempts": 0, "tier": 1}, {"kind": "train"}]}
                """)
            #expect(refused.status == 422)
            #expect(refused.pointers == ["/jobs/1/kind", "/jobs/2/maxAttempts", "/jobs/2/tier", "/jobs/3/payload"])
            let before = try await farm.stats(queues: ["default", "ml"])
            #expect(before.map(\.depth) == [0, 0], "not even the valid jobs were enqueued")
            #expect(try await farm.queues().isEmpty)

            // The validate job's model and dataset exist (a job naming a missing one is refused at submission).
            let client = RedisClient(configuration: farm.configuration.redis, name: "test-models")
            _ = try await ModelRegistry(client: client, namespace: farm.configuration.namespace).push(model: try inferenceTestModel(), name: "m")
            try await DatasetStore(client: client, namespace: farm.configuration.namespace).push(name: "d", bytes: Array("a,b\n1,2\n".utf8))
            let jobs = (0..<250).map { #"{"kind": "noop", "tier": "free", "payload": {"n": \#($0)}}"# } + [#"{"kind": "validate", "payload": {"candidate": "m", "dataset": "farm:d"}}"#]
            let accepted = try await api.post("/v1/jobs:bulk", #"{"jobs": [\#(jobs.joined(separator: ","))]}"#)
            #expect(accepted.status == 201)
            guard case .array(let items)? = accepted.json?["jobs"] else { Issue.record("no jobs"); return }
            #expect(items.count == 251)
            #expect(Set(items.compactMap { $0["id"]?.stringValue }).count == 251)
            #expect(items.last?["queue"] == .string("ml"))
            let after = try await farm.stats(queues: ["default", "ml"])
            #expect(after.map(\.depth) == [250, 1])

            let over = (0...1000).map { _ in #"{"kind": "noop"}"# }.joined(separator: ",")
            let tooMany = try await api.post("/v1/jobs:bulk", #"{"jobs": [\#(over)]}"#)
            #expect(tooMany.status == 422)
            #expect(tooMany.pointers == ["/jobs"])
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func routingRefusesUnknownKindsAndCountsLiveWorkersPerQueue() async throws {
        let farm = try TestRedis.farm()
        var configuration = DispatcherConfiguration(port: 0, authentication: .disabled)
        configuration.workerCacheTTL = .zero
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            let unknown = try await api.post("/v1/jobs", #"{"kind": "resize"}"#)
            #expect(unknown.status == 422)
            #expect(unknown.pointers == ["/kind"])
            #expect(try await farm.queues().isEmpty)

            // The model must exist (a job naming a missing one is refused at submission).
            let registry = ModelRegistry(client: RedisClient(configuration: farm.configuration.redis, name: "test-models"), namespace: farm.configuration.namespace)
            let pushed = try await registry.push(model: try inferenceTestModel(), name: "digits-mlp")
            try await registry.setAlias("production", name: "digits-mlp", version: pushed.version)
            try await withTestWorker(farm: farm, registry: .builtins(), queues: ["default"], concurrency: 1) { _ in
                try await waitUntilRegistered(farm)
                let ml = try await api.post("/v1/jobs", #"{"kind": "inference", "payload": {"model": "digits-mlp:production", "inputs": [[0]]}}"#)
                #expect(ml.status == 201, "a known kind is accepted though no worker serves its queue")
                #expect(ml.json?["queue"] == .string("ml"))
                #expect(ml.json?["workersServing"] == .number(0))
                let echo = try await api.post("/v1/jobs", #"{"kind": "echo"}"#)
                #expect(echo.json?["workersServing"] == .number(1))
                let queues = try await api.get("/v1/queues")
                guard case .array(let items)? = queues.json?["queues"] else { Issue.record("no queues"); return }
                #expect(items.first { $0["name"] == .string("ml") }?["workersServing"] == .number(0))
                #expect(items.first { $0["name"] == .string("default") }?["workersServing"] == .number(1))
                _ = try await api.get("/v1/jobs/\(try #require(echo.json?["id"]?.stringValue))/wait?timeout=10s")
            }
        }
    }

    @Test func healthReadinessAndTheDocument() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            #expect(try await api.get("/healthz").json == .object(["status": .string("ok")]))
            let ready = try await api.get("/readyz")
            #expect(ready.status == 200)
            #expect(ready.json?["status"] == .string("ready"))
            let document = try await api.get("/openapi.yaml")
            #expect(document.status == 200)
            #expect(document.text == (try String(contentsOfFile: openAPIPath, encoding: .utf8)), "the served document is docs/openapi.yaml")
        }
        // Redis unreachable: alive, ready while the outbox has room ("spooling"), not ready once it is full.
        let closedPort = try TestRedis.farm(redis: try RedisConfiguration(url: "redis://127.0.0.1:1"))
        var oneJob = DispatcherConfiguration(port: 0, authentication: .disabled)
        oneJob.outbox.maxJobs = 1
        try await withDispatcher(farm: closedPort, configuration: oneJob) { api in
            #expect(try await api.get("/healthz").status == 200)
            let spooling = try await api.get("/readyz")
            #expect(spooling.status == 200 && spooling.json?["status"] == .string("spooling"))
            #expect(try await api.post("/v1/jobs", #"{"kind": "noop"}"#).status == 202)
            let ready = try await api.get("/readyz")
            #expect(ready.status == 503)
            #expect(ready.headers["retry-after"] != nil)
        }
    }
}

@Suite("Waiting for a job", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct WaitCancellationTests {
    /// The dispatcher ends waits at shutdown by cancelling them; `JobFarm.wait` used to ignore cancellation and
    /// run to its timeout.
    @Test(.timeLimit(.minutes(1)))
    func aCancelledWaitEndsAtOnce() async throws {
        let farm = try TestRedis.farm()
        let id = try await farm.enqueue(EnqueueRequest(kind: "sleep", delay: .seconds(60)))
        let clock = ContinuousClock()
        let start = clock.now
        let waiter = Task { try await farm.wait(for: id, timeout: .seconds(20)) }
        try await Task.sleep(for: .milliseconds(300))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(clock.now - start < .seconds(3))
    }
}
