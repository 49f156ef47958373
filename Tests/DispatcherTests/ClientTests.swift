import Dispatcher
import Foundation
@testable import JobFarmClient
import JobFarmTesting
import JobKinds
import JobQueue
import JobWorker
import ModelStore
import NIOCore
import RedisClient
import Testing

/// `JobFarmClient` against a real dispatcher on a loopback port: the routes' happy paths and their refusals as a
/// Swift frontend sees them (typed answers, `JobFarmClientError` with the whole problem). The raw-HTTP tests beside
/// these keep checking headers and the document.
@Suite("JobFarmClient", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct ClientTests {
    @Test(.timeLimit(.minutes(1)))
    func submitWaitShowStreamCancelAndQueues() async throws {
        let farm = try TestRedis.farm()
        var configuration = DispatcherConfiguration(port: 0, authentication: .disabled)
        configuration.maxWait = .seconds(3)
        configuration.defaultWait = .seconds(1)
        configuration.eventHeartbeat = .milliseconds(300)
        try await withTestWorker(farm: farm, registry: .builtins(), queues: nil, concurrency: 2) { _ in
            try await waitUntilRegistered(farm)
            try await withDispatcher(farm: farm, configuration: configuration) { api in
                // longestWaitPerRequest under the dispatcher's 3 s: `wait` sends as many requests as its timeout needs.
                var client = JobFarmClient(baseURL: api.base)
                client.longestWaitPerRequest = .seconds(2)

                let accepted = try await client.submit(kind: "echo", tier: "premium", payload: .object(["hello": .array([.number(1), .number(2)])]))
                #expect(accepted.queue == "default" && accepted.tier == "premium" && accepted.state == .queued)
                #expect(!accepted.spooled && !accepted.duplicate && !accepted.replayed)
                #expect(accepted.workersServing == 1)
                let done = try await client.wait(accepted.id, timeout: .seconds(20))
                #expect(done.state == .succeeded && done.isFinal)
                #expect(done.result == .object(["hello": .array([.number(1), .number(2)])]))
                #expect(done.progress == 1 && done.attempts == 1 && done.finishedAt != nil && done.enqueuedAt != nil)
                struct Hello: Decodable { var hello: [Int] }
                #expect(try done.decodeResult(Hello.self).hello == [1, 2])
                #expect(try await client.job(accepted.id) == done)
                #expect(try await client.cancel(accepted.id) == .alreadyFinished)

                // An Encodable payload; a sleep of 4 s outlasts one stream (3 s): the sequence reconnects with
                // Last-Event-ID and ends after the final event.
                struct Sleep: Encodable, Sendable { var seconds: Double; var steps: Int }
                let sleeper = try await client.submit(kind: "sleep", payload: Sleep(seconds: 4, steps: 4))
                var events: [JobEvent] = []
                for try await event in client.events(sleeper.id) { events.append(event) }
                #expect(events.last?.isFinal == true && events.last?.job.state == .succeeded, "\(events.map(\.name))")
                #expect(events.dropLast().allSatisfy { $0.name == "progress" })
                let ids = events.compactMap { $0.id.flatMap { Int64($0) } }
                #expect(ids == ids.sorted() && Set(ids).count == ids.count, "each event once, in order: \(ids)")
                #expect(events.count >= 2, "progress on the way: \(events.map { $0.job.progress ?? -1 })")
                // Resumed after the final event: nothing more (the dispatcher answers 204).
                var after = 0
                for try await _ in client.events(sleeper.id, lastEventID: events.last?.id) { after += 1 }
                #expect(after == 0)

                // The validate job's model and dataset exist (a job naming a missing one is refused at submission).
                let redis = RedisClient(configuration: farm.configuration.redis, name: "test-models")
                _ = try await ModelRegistry(client: redis, namespace: farm.configuration.namespace).push(model: try inferenceTestModel(), name: "m")
                try await DatasetStore(client: redis, namespace: farm.configuration.namespace).push(name: "d", bytes: Array("a,b\n1,2\n".utf8))
                let bulk = try await client.submitBulk([
                    JobSubmission(kind: "noop", tier: "free"),
                    JobSubmission(kind: "sleep", payload: .object(["seconds": .number(1)]), delay: .seconds(60)),
                    JobSubmission(kind: "validate", payload: .object(["candidate": .string("m"), "dataset": .string("farm:d")])),
                ])
                #expect(bulk.map(\.state) == [.queued, .scheduled, .queued])
                #expect(bulk.map(\.queue) == ["default", "default", "ml"])
                #expect(try await client.cancel(bulk[1].id) == .cancelled)
                #expect(try await client.job(bulk[1].id).state == .cancelled)

                let queues = try await client.queues()
                #expect(queues.map(\.name) == ["default", "ml"])
                #expect(queues.allSatisfy { $0.workersServing == 1 })
                #expect(queues.first?.tiers.map(\.name) == farm.configuration.tiers)

                // The same submission under one Idempotency-Key: the first job, replayed.
                let first = try await client.submit(kind: "noop", idempotencyKey: "order-1")
                let again = try await client.submit(kind: "noop", idempotencyKey: "order-1")
                #expect(again.id == first.id && again.replayed && !first.replayed)
            }
        }
    }

    @Test func refusalsCarryTheWholeProblem() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            let client = JobFarmClient(baseURL: api.base)
            do {
                _ = try await client.submit(JobSubmission(kind: "resize", tier: "gold", delay: .seconds(5), runAt: Date(timeIntervalSinceNow: 60), maxAttempts: 0))
                Issue.record("an invalid job was accepted")
            } catch let error as JobFarmClientError {
                let problem = try #require(error.problem)
                #expect(error.status == 422 && problem.status == 422)
                #expect(problem.title == "Unprocessable Content")
                #expect(problem.pointers == ["/kind", "/maxAttempts", "/runAt", "/tier"], "\(problem)")
                #expect(problem.errors.allSatisfy { !$0.detail.isEmpty })
                #expect(error.retryAfter == nil)
            }
            do {
                _ = try await client.submitBulk([JobSubmission(kind: "echo"), JobSubmission(kind: "resize"), JobSubmission(kind: "train")])
                Issue.record("an invalid bulk was accepted")
            } catch let error as JobFarmClientError {
                #expect(error.problem?.pointers == ["/jobs/1/kind", "/jobs/2/payload"])
            }
            #expect(try await farm.queues().isEmpty, "nothing reached Redis")
            #expect(await clientError { try await client.job("01JUNKNOWN00000000000000") }?.status == 404)
            #expect(await clientError { try await client.cancel("01JUNKNOWN00000000000000") }?.status == 404)
            #expect(await clientError { for try await _ in client.events("01JUNKNOWN00000000000000") {} }?.status == 404)
            // A wait longer than the dispatcher's longest: the 400 names the parameter.
            var greedy = client
            greedy.longestWaitPerRequest = .seconds(600)
            let id = try await client.submit(kind: "noop").id
            #expect(await clientError { try await greedy.wait(id, timeout: .seconds(600)) }?.problem?.errors.first?.parameter == "timeout")
        }
    }

    @Test func keysRateLimitsAndRetryAfter() async throws {
        let farm = try TestRedis.farm()
        var configuration = DispatcherConfiguration(port: 0, authentication: .apiKeys)
        configuration.tenants = TenantDirectory(tenants: ["acme": TenantPolicy(rateLimit: RateLimitRule(perSecond: 0.01, burst: 2))])
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: ["standard"], isOperator: false)
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            #expect(await clientError { try await JobFarmClient(baseURL: api.base).queues() }?.status == 401)
            #expect(await clientError { try await JobFarmClient(baseURL: api.base, apiKey: "jfk_nope").queues() }?.status == 401)
            let client = JobFarmClient(baseURL: api.base, apiKey: key)
            let forbidden = await clientError { try await client.submit(kind: "noop", tier: "premium") }
            #expect(forbidden?.status == 403 && forbidden?.problem?.pointers == ["/tier"])
            #expect(await clientError { try await client.deadLetters() }?.status == 403)
            _ = try await client.submit(kind: "noop")
            _ = try await client.submit(kind: "noop")
            do {
                _ = try await client.submit(kind: "noop")
                Issue.record("over the burst, accepted")
            } catch let error as JobFarmClientError {
                #expect(error.status == 429)
                #expect((error.retryAfter ?? .zero) > .zero, "Retry-After exposed: \(error)")
                #expect(error.problem?.rateLimitPolicy?.contains("\"tenant\";q=2") == true)
            }
        }
    }

    /// Redis down: a submission is accepted into the outbox (202, `spooled`), readable from it; reads that need
    /// Redis are 503 with Retry-After.
    @Test(.timeLimit(.minutes(1)))
    func spooledSubmissionsAreAcceptedAndVisible() async throws {
        let closedPort = try TestRedis.farm(redis: try RedisConfiguration(url: "redis://127.0.0.1:1"))
        try await withDispatcher(farm: closedPort) { api in
            let client = JobFarmClient(baseURL: api.base)
            let accepted = try await client.submit(kind: "noop", tier: "free")
            #expect(accepted.spooled && accepted.state == .queued)
            let shown = try await client.job(accepted.id)
            #expect(shown.spooled && shown.state == .queued && shown.attempts == 0)
            let bulk = try await client.submitBulk([JobSubmission(kind: "noop"), JobSubmission(kind: "echo")])
            #expect(bulk.allSatisfy { $0.spooled })
            #expect(try await client.cancel(bulk[0].id) == .cancelled)
            do {
                _ = try await client.queues()
                Issue.record("queues answered without Redis")
            } catch let error as JobFarmClientError {
                #expect(error.status == 503)
                #expect(error.retryAfter != nil)
            }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func deadLetterOperatorCalls() async throws {
        let farm = try TestRedis.farm()
        try await withTestWorker(farm: farm, registry: .builtins(), queues: nil, concurrency: 2) { _ in
            try await withDispatcher(farm: farm) { api in
                let client = JobFarmClient(baseURL: api.base)
                let dead = try await client.submit(JobSubmission(kind: "fail", payload: .object([
                    "message": .string("disk full"), "retryable": .bool(false)]), maxAttempts: 1))
                #expect(try await client.wait(dead.id, timeout: .seconds(20)).state == .dead)
                let page = try await client.deadLetters(reason: "non_retryable", error: "disk", since: Date(timeIntervalSinceNow: -600), limit: 10)
                #expect(page.deadLetters.map(\.id) == [dead.id] && page.nextCursor == nil)
                #expect(page.deadLetters.first?.error == "disk full" && page.deadLetters.first?.kind == "fail")
                let letter = try await client.deadLetter(dead.id)
                #expect(letter.history.count == 1 && letter.envelope != nil && letter.deadAt != nil)
                let dryRun = try await client.requeueDeadLetters(DeadLetterSelection(error: "disk"))
                #expect(dryRun.dryRun && dryRun.requeued == [dead.id])
                let purgeRun = try await client.purgeDeadLetters(DeadLetterSelection(ids: [dead.id]))
                #expect(purgeRun.dryRun && purgeRun.ids == [dead.id])
                let purged = try await client.purgeDeadLetters(DeadLetterSelection(ids: [dead.id]), confirm: try #require(purgeRun.confirm))
                #expect(!purged.dryRun && purged.count == 1)
                #expect(try await client.deadLetters().deadLetters.isEmpty)
                #expect(await clientError { try await client.deadLetter(dead.id) }?.status == 404)
            }
        }
    }
}

/// README.md and docs/API.md, "From Swift": the client samples, line for line (`ClientSampleTests` checks that every
/// line of every ```swift client block is here, in order, and runs this).
@discardableResult
func clientSample(baseURL: String, key: String?) async throws -> Job {
    let farm = JobFarmClient(baseURL: baseURL, apiKey: key)   // baseURL: "http://127.0.0.1:8080"
    let job = try await farm.submit(kind: "echo", tier: "premium", payload: .object(["hello": .number(1)]))
    let done = try await farm.wait(job.id, timeout: .seconds(30))   // done.state == .succeeded, done.result
    for try await event in farm.events(job.id) { print(event.name, event.job.progress ?? 0) }   // reconnects with Last-Event-ID
    do {
        _ = try await farm.submit(kind: "resize")
    } catch let error as JobFarmClientError {
        print(error.status, error.problem?.errors ?? [], error.retryAfter ?? .zero)   // 422 [/kind: unknown kind…]; Retry-After on 429/503
    }
    return done
}

@Suite("JobFarmClient samples in the docs")
struct ClientSampleTests {
    @Test func everyLineOfTheDocsSwiftClientSamplesIsCompiledHere() throws {
        let source = try String(contentsOf: PackagePaths.root.appendingPathComponent("Tests/DispatcherTests/ClientTests.swift"), encoding: .utf8)
        let compiled = source.components(separatedBy: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        for file in ["README.md", "docs/API.md"] {
            var rest = try String(contentsOf: PackagePaths.root.appendingPathComponent(file), encoding: .utf8)[...]
            var blocks = 0
            while let start = rest.range(of: "```swift client\n") {
                let end = rest.range(of: "\n```", range: start.upperBound..<rest.endIndex)?.lowerBound ?? rest.endIndex
                var position = 0
                for line in rest[start.upperBound..<end].components(separatedBy: "\n") {
                    let text = line.trimmingCharacters(in: .whitespaces)
                    guard let found = compiled[position...].firstIndex(of: text) else {
                        Issue.record("\(file): a Swift client line not in Tests/DispatcherTests/ClientTests.swift (or out of order): \(text)")
                        continue
                    }
                    position = found + 1
                }
                blocks += 1
                rest = rest[end...]
            }
            #expect(blocks >= 1, "\(file) has a ```swift client sample")
        }
    }

    @Test(.enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"), .timeLimit(.minutes(1)))
    func theSampleRuns() async throws {
        let farm = try TestRedis.farm()
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: farm.configuration.tiers, isOperator: false)
        let done = try await withTestWorker(farm: farm, registry: .builtins(), queues: nil, concurrency: 2) { _ in
            try await withDispatcher(farm: farm, configuration: DispatcherConfiguration(port: 0, authentication: .apiKeys)) { api in
                try await clientSample(baseURL: api.base, key: key)
            }
        }
        #expect(done.state == .succeeded && done.result == .object(["hello": .number(1)]))
    }
}

/// The Server-Sent Events reader on its own: split anywhere, CRLF or LF, comments, several data lines.
@Suite("JobFarmClient's event parser")
struct ClientEventParserTests {
    @Test func eventsSurviveAnySplitAndLineEnding() throws {
        let text = ": heartbeat\n\nid: 7\nevent: progress\ndata: {\"a\":\ndata: 1}\n\n: heartbeat\r\n\r\nid: 9\r\nevent: final\r\ndata: {}\r\n\r\n"
        let bytes = Array(text.utf8)
        for split in [1, 2, 3, 7, bytes.count] {
            var events: [(String?, String, String?)] = []
            var reader = ServerSentEventParser()
            var offset = 0
            while offset < bytes.count {
                let end = min(offset + split, bytes.count)
                reader.append(ByteBuffer(bytes: bytes[offset..<end]))
                offset = end
                while let event = reader.nextEvent() { events.append((event.id, event.name, event.data)) }
            }
            #expect(events.map(\.0) == ["7", "9"], "split \(split)")
            #expect(events.map(\.1) == ["progress", "final"])
            #expect(events.map(\.2) == ["{\"a\":\n1}", "{}"])
        }
    }
}

/// The `JobFarmClientError` that `body` throws; `nil` (and an issue recorded) when it throws none or another error.
func clientError<T>(_ body: () async throws -> T, sourceLocation: SourceLocation = #_sourceLocation) async -> JobFarmClientError? {
    do {
        _ = try await body()
        Issue.record("no error was thrown", sourceLocation: sourceLocation)
    } catch let error as JobFarmClientError {
        return error
    } catch {
        Issue.record("threw \(error), not a JobFarmClientError", sourceLocation: sourceLocation)
    }
    return nil
}
