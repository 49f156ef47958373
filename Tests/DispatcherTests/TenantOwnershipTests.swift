import Dispatcher
import Foundation
import JobFarmClient
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import RedisClient
import Testing

/// Jobs belong to the tenant that submitted them: another tenant reads, waits for, streams and cancels none of them
/// (404, as for an unknown id: their existence is not revealed); operators see every job.
@Suite("Jobs owned by tenants", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct TenantOwnershipTests {
    static func isNotFound(_ error: JobFarmClientError?) -> Bool {
        error?.status == 404 && error?.problem?.detail.hasPrefix("no job '") == true
    }

    @Test(.timeLimit(.minutes(1)))
    func aTenantSeesAndCancelsOnlyItsOwnJobs() async throws {
        let farm = try TestRedis.farm()
        let keys = apiKeys(farm)
        let (acmeKey, _) = try await keys.create(tenant: "acme", tiers: farm.configuration.tiers, isOperator: false)
        let (globexKey, _) = try await keys.create(tenant: "globex", tiers: farm.configuration.tiers, isOperator: false)
        let (operatorKey, _) = try await keys.create(tenant: "ops", tiers: farm.configuration.tiers, isOperator: true)
        try await withDispatcher(farm: farm, configuration: DispatcherConfiguration(port: 0, authentication: .apiKeys)) { api in
            let acme = JobFarmClient(baseURL: api.base, apiKey: acmeKey)
            let globex = JobFarmClient(baseURL: api.base, apiKey: globexKey)
            let ops = JobFarmClient(baseURL: api.base, apiKey: operatorKey)

            // Pending (its envelope in `pending`) and delayed (a job hash from the start): both carry the tenant.
            let pending = try await acme.submit(kind: "noop")
            let delayed = try await acme.submit(JobSubmission(kind: "sleep", payload: .object(["seconds": .number(1)]), delay: .seconds(120)))
            for id in [pending.id, delayed.id] {
                #expect(try await acme.job(id).id == id)
                #expect(try await ops.job(id).id == id, "operators see every job")
                #expect(Self.isNotFound(await clientError { try await globex.job(id) }))
                #expect(Self.isNotFound(await clientError { try await globex.wait(id, timeout: .seconds(5)) }))
                #expect(Self.isNotFound(await clientError { for try await _ in globex.events(id) {} }))
                #expect(Self.isNotFound(await clientError { try await globex.cancel(id) }))
            }
            #expect(try await acme.job(delayed.id).state == .scheduled, "globex's cancel changed nothing")
            // The 404 is the one an unknown id gets, word for word but the id.
            let unknown = "01JUNKNOWN00000000000000"
            var answers: [String] = []
            for (client, id) in [(globex, delayed.id), (globex, unknown)] {
                do { _ = try await client.job(id) } catch let error as JobFarmClientError {
                    answers.append((error.problem?.detail ?? "").replacingOccurrences(of: id, with: "ID"))
                }
            }
            #expect(answers.count == 2 && answers[0] == answers[1], "\(answers)")
            #expect(try await acme.cancel(delayed.id) == .cancelled)
            #expect(try await acme.wait(delayed.id, timeout: .seconds(1)).state == .cancelled)

            // A job enqueued without the dispatcher (the CLI, the library) belongs to no tenant: operators only.
            let direct = try await farm.enqueue(EnqueueRequest(kind: "noop"))
            #expect(Self.isNotFound(await clientError { try await acme.job(direct) }))
            #expect(try await ops.job(direct).id == direct)
            #expect(try await ops.cancel(direct) == .cancelled)

            // A `unique` key is per tenant: globex's job with acme's key is a job of its own, not acme's id.
            let acmeUnique = try await acme.submit(JobSubmission(kind: "noop", uniqueKey: "invoice-9"))
            let globexUnique = try await globex.submit(JobSubmission(kind: "noop", uniqueKey: "invoice-9"))
            #expect(!globexUnique.duplicate && globexUnique.id != acmeUnique.id)
            let acmeAgain = try await acme.submit(JobSubmission(kind: "noop", uniqueKey: "invoice-9"))
            #expect(acmeAgain.duplicate && acmeAgain.id == acmeUnique.id, "within a tenant the key still makes one job")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aTenantWaitsForAndStreamsItsOwnJobToTheEnd() async throws {
        let farm = try TestRedis.farm()
        let (acmeKey, _) = try await apiKeys(farm).create(tenant: "acme", tiers: farm.configuration.tiers, isOperator: false)
        try await withTestWorker(farm: farm, registry: .builtins(), queues: nil, concurrency: 2) { _ in
            try await withDispatcher(farm: farm, configuration: DispatcherConfiguration(port: 0, authentication: .apiKeys)) { api in
                let acme = JobFarmClient(baseURL: api.base, apiKey: acmeKey)
                let job = try await acme.submit(kind: "sleep", payload: .object(["seconds": .number(0.5), "steps": .number(2)]))
                var last: JobEvent?
                for try await event in acme.events(job.id) { last = event }
                #expect(last?.isFinal == true && last?.job.state == .succeeded)
                #expect(try await acme.wait(job.id).state == .succeeded)
                let echoed = try await acme.submit(kind: "echo", payload: .object(["n": .number(3)]))
                #expect(try await acme.wait(echoed.id, timeout: .seconds(20)).result == .object(["n": .number(3)]))
            }
        }
    }

    /// While Redis is down the job waits in the outbox, with its tenant: the same rules there.
    @Test(.timeLimit(.minutes(1)))
    func spooledJobsAreTheirTenantsToo() async throws {
        let closedPort = try TestRedis.farm(redis: try RedisConfiguration(url: "redis://127.0.0.1:1"))
        let keys: [String: APIKey] = [
            "jfk_acme00000000_" + String(repeating: "a", count: 64): APIKey(id: "acme00000000", tenant: "acme", tiers: ["standard"], isOperator: false, createdAt: 0),
            "jfk_globex000000_" + String(repeating: "b", count: 64): APIKey(id: "globex000000", tenant: "globex", tiers: ["standard"], isOperator: false, createdAt: 0),
            "jfk_ops000000000_" + String(repeating: "c", count: 64): APIKey(id: "ops000000000", tenant: "ops", tiers: ["standard"], isOperator: true, createdAt: 0),
        ]
        let configuration = DispatcherConfiguration(port: 0, authentication: .apiKeys)
        var access = AccessControl(farm: closedPort, configuration: configuration)
        access.keys = FixedKeys(byHash: Dictionary(uniqueKeysWithValues: keys.map { (APIKeySecret.hash($0.key), $0.value) }))
        let secrets = Dictionary(uniqueKeysWithValues: keys.map { ($0.value.tenant, $0.key) })
        try await withDispatcher(farm: closedPort, configuration: configuration, access: access) { api in
            let acme = JobFarmClient(baseURL: api.base, apiKey: secrets["acme"])
            let globex = JobFarmClient(baseURL: api.base, apiKey: secrets["globex"])
            let ops = JobFarmClient(baseURL: api.base, apiKey: secrets["ops"])
            let spooled = try await acme.submit(kind: "noop")
            #expect(spooled.spooled)
            #expect(try await acme.job(spooled.id).spooled)
            #expect(try await ops.job(spooled.id).spooled)
            #expect(Self.isNotFound(await clientError { try await globex.job(spooled.id) }))
            #expect(Self.isNotFound(await clientError { try await globex.wait(spooled.id, timeout: .seconds(1)) }))
            #expect(Self.isNotFound(await clientError { for try await _ in globex.events(spooled.id) {} }))
            #expect(Self.isNotFound(await clientError { try await globex.cancel(spooled.id) }))
            #expect(try await acme.job(spooled.id).state == .queued, "not cancelled by globex")
            #expect(try await acme.cancel(spooled.id) == .cancelled)
        }
    }
}

/// API keys from a fixed table (the outbox tests' dispatcher has no Redis to look them up in).
struct FixedKeys: APIKeyLookup {
    let byHash: [String: APIKey]
    func key(hash: String) async throws -> APIKey? { byHash[hash] }
}
