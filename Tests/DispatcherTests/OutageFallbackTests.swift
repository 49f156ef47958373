import Dispatcher
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// What a replica uses while Redis is away: its share of each rate limit (the shared limit divided by the live
/// replicas last seen), and the API keys it saw before, even across its own restart.
@Suite("Dispatcher while Redis is away")
struct OutageFallbackTests {
    @Test func theLocalLimiterAllowsEachReplicaItsShare() async throws {
        let rule = RateLimitRule(perSecond: 0.1, burst: 9)
        func allowed(_ limiter: LocalRateLimiter) async throws -> Int {
            var count = 0
            for _ in 0..<12 {
                let decision = try await limiter.charge([RateLimitCharge(name: "tenant", key: "acme", rule: rule, cost: 1)])
                if decision.allowed { count += 1 }
            }
            return count
        }
        #expect(try await allowed(LocalRateLimiter()) == 9, "alone: the whole burst")
        #expect(try await allowed(LocalRateLimiter(replicas: { 3 })) == 3, "one of three: a third of it")
        #expect(LocalRateLimiter.share(of: rule, replicas: 20) == RateLimitRule(perSecond: 0.005, burst: 1), "never below one job")
        let refused = try await LocalRateLimiter(replicas: { 3 }).charge([RateLimitCharge(name: "tenant", key: "acme", rule: rule, cost: 4)])
        #expect(!refused.allowed && refused.states.first?.charge.rule.burst == 3, "the headers show this replica's share")
    }

    @Test func keysSeenAreKeptOnDiskAsHashesAndForgottenWhenRevoked() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-keys-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = PersistedAPIKeys.path(besideOutbox: directory.appendingPathComponent("outbox-r1.sqlite").path)
        #expect(path.hasSuffix("/outbox-r1.keys.sqlite"))
        let key = APIKey(id: "abc", tenant: "acme", tiers: ["standard", "premium"], isOperator: true, createdAt: 42)
        let secret = "jfk_abc_" + String(repeating: "7", count: 64)
        do {
            let file = try PersistedAPIKeys(path: path)
            file.remember(hash: APIKeySecret.hash(secret), key: key)
            file.flush()
        }
        let reopened = try PersistedAPIKeys(path: path)
        #expect(reopened.count == 1)
        #expect(reopened.key(hash: APIKeySecret.hash(secret)) == key)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path)) + ((try? Data(contentsOf: URL(fileURLWithPath: path + "-wal"))) ?? Data())
        #expect(bytes.range(of: Data(secret.utf8)) == nil, "the key itself is never written")
        reopened.forget(hash: APIKeySecret.hash(secret))
        reopened.flush()
        let after = try PersistedAPIKeys(path: path)
        #expect(after.count == 0)
        #expect(after.key(hash: APIKeySecret.hash(secret)) == nil)
    }
}

@Suite("Dispatcher while Redis is away, on Redis", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct OutageFallbackRedisTests {
    @Test(.timeLimit(.minutes(1)))
    func replicasCountEachOtherAndForgetOnesThatStopped() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: farm.configuration.redis, name: "test-presence")
        let one = LiveReplicas(replica: "r1", namespace: farm.configuration.namespace, horizon: .milliseconds(600))
        let two = LiveReplicas(replica: "r2", namespace: farm.configuration.namespace, horizon: .milliseconds(600))
        #expect(one.count == 1, "before any beat: alone")
        #expect(try await one.beat(client: client) == 1)
        #expect(try await two.beat(client: client) == 2)
        #expect(try await one.beat(client: client) == 2)
        #expect(one.count == 2 && two.count == 2)
        try await Task.sleep(for: .milliseconds(800))
        #expect(try await one.beat(client: client) == 1, "r2 stopped beating")
    }

    /// A replica restarted while Redis is down still takes the keys it served before (read from its file), so the
    /// submissions of those tenants are spooled, not refused; a key it never saw cannot be checked (503).
    @Test(.timeLimit(.minutes(1)))
    func aReplicaRestartedDuringAnOutageKeepsTheKeysItSawBefore() async throws {
        let server = try OwnRedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: server.url))
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: ["standard"], isOperator: false)
        let (unseen, _) = try await apiKeys(farm).create(tenant: "acme", tiers: ["standard"], isOperator: false)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-restart-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        var configuration = DispatcherConfiguration(port: 0, authentication: .apiKeys)
        configuration.outbox.path = directory.appendingPathComponent("outbox-r1.sqlite").path
        configuration.outbox.replica = "r1"
        configuration.outbox.breaker = CircuitBreakerSettings(failureThreshold: 1, openDuration: .milliseconds(200), callTimeout: .milliseconds(500))
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            let seen = try await api.with(key: key).get("/v1/queues")
            #expect(seen.status == 200)
        }
        server.stop()
        let id = try await withDispatcher(farm: farm, configuration: configuration) { api in
            let spooled = try await api.with(key: key).post("/v1/jobs", #"{"kind": "echo", "payload": {"n": 1}}"#)
            #expect(spooled.status == 202 && spooled.json?["spooled"] == .bool(true), "\(spooled.text)")
            let never = try await api.with(key: unseen).post("/v1/jobs", #"{"kind": "echo"}"#)
            #expect(never.status == 503, "a key this replica never saw cannot be checked while Redis is away")
            return spooled.json?["id"]?.stringValue
        }
        try server.start()
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            var state: JSONValue?
            for _ in 0..<100 where state != .string("queued") {
                state = try await api.with(key: key).get("/v1/jobs/\(id ?? "")").json?["state"]
                if state != .string("queued") { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(state == .string("queued"), "forwarded once Redis is back")
        }
        #expect(try await farm.stats(queues: ["default"]).first?.depth == 1)
    }
}

@Suite("Idempotency while Redis is away", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct OutboxIdempotencyTests {
    /// An Idempotency-Key used while Redis is down is claimed in the outbox: a retry gets the first answer (spooled,
    /// replayed), another body under it 422; once Redis is back the record is copied there, so another replica
    /// replays it too, and one job ran.
    @Test(.timeLimit(.minutes(1)))
    func keysClaimedDuringAnOutageReplayAndReachRedis() async throws {
        let server = try OwnRedisServer(extraArguments: ["--appendonly", "yes", "--appendfsync", "always"])
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: server.url))
        var configuration = DispatcherConfiguration(port: 0, authentication: .disabled)
        configuration.outbox.breaker = CircuitBreakerSettings(failureThreshold: 1, openDuration: .milliseconds(200), callTimeout: .milliseconds(500))
        configuration.outbox.replica = "r1"
        let body = #"{"kind": "echo", "payload": {"n": 1}}"#
        let headers = ["Idempotency-Key": "order-42"]
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            #expect(try await api.get("/readyz").status == 200)
            server.stop()
            let first = try await api.post("/v1/jobs", body, headers: headers)
            #expect(first.status == 202 && first.json?["spooled"] == .bool(true), "\(first.text)")
            let id = try #require(first.json?["id"]?.stringValue)
            let again = try await api.post("/v1/jobs", body, headers: headers)
            #expect(again.status == 202 && again.json?["id"]?.stringValue == id, "\(again.text)")
            #expect(again.headers["idempotent-replayed"] == "true")
            let other = try await api.post("/v1/jobs", #"{"kind": "echo", "payload": {"n": 2}}"#, headers: headers)
            #expect(other.status == 422, "another body under the key")

            try server.start()
            var copied = false
            let client = RedisClient(configuration: farm.configuration.redis, name: "test-idem")
            let recordKey = RedisIdempotencyStore.key(namespace: farm.configuration.namespace, tenant: "dev", key: "order-42")
            for _ in 0..<100 where !copied {
                copied = (try? await client.execute(RedisCommand("EXISTS", recordKey)).int) == 1
                if !copied { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(copied, "the record reaches Redis after the outbox is forwarded")
        }
        configuration.outbox.replica = "r2"
        try await withDispatcher(farm: farm, configuration: configuration) { api in
            let replay = try await api.post("/v1/jobs", body, headers: headers)
            #expect(replay.status == 201 && replay.headers["idempotent-replayed"] == "true", "\(replay.text)")
            #expect(replay.json?["id"]?.stringValue?.hasSuffix(".r1") == true, "the first replica's job")
        }
        #expect(try await farm.stats(queues: ["default"]).first?.depth == 1, "one job")
    }
}
