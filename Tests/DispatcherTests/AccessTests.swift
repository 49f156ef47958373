import Dispatcher
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Prometheus
import RedisClient
import Testing

/// API keys, tenants, rate limits, idempotency keys, /metrics and 405, over a real server on loopback and the real
/// Redis of scripts/test.
@Suite("Dispatcher access", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct AccessTests {
    /// Auth on, keys looked up on every request (no cache), the tenants given.
    static func configuration(tenants: TenantDirectory = .unrestricted, keyCacheTTL: Duration = .zero) -> DispatcherConfiguration {
        DispatcherConfiguration(port: 0, authentication: .apiKeys, tenants: tenants, keyCacheTTL: keyCacheTTL)
    }

    /// Jobs waiting in `queue` (every tier).
    static func depth(_ farm: JobFarm, _ queue: String = "default") async throws -> Int {
        try await farm.stats(queues: [queue]).first?.depth ?? 0
    }

    @Test(.timeLimit(.minutes(1)))
    func missingWrongAndRevokedKeysAre401ForbiddenTiersAndOperatorRoutesAre403() async throws {
        let farm = try TestRedis.farm()
        let keys = apiKeys(farm)
        let (standardKey, record) = try await keys.create(tenant: "acme", tiers: ["standard"], isOperator: false)
        let (operatorKey, _) = try await keys.create(tenant: "ops", tiers: ["premium", "standard", "free"], isOperator: true)
        let (strangerKey, _) = try await keys.create(tenant: "stranger", tiers: ["standard"], isOperator: false)
        // acme is listed with two tiers (its key has one of them); ops is listed; stranger is not, and there is no "*".
        let tenants = TenantDirectory(tenants: ["acme": TenantPolicy(tiers: ["premium", "standard"]), "ops": TenantPolicy()], fallback: nil)
        try await withDispatcher(farm: farm, configuration: Self.configuration(tenants: tenants)) { api in
            let job = #"{"kind": "echo", "tier": "standard", "payload": {"a": 1}}"#
            let none = try await api.post("/v1/jobs", job)
            #expect(none.status == 401)
            #expect(none.headers["www-authenticate"]?.hasPrefix("Bearer") == true)
            let wrong = try await api.with(key: "jfk_000000000000_" + String(repeating: "0", count: 64)).post("/v1/jobs", job)
            #expect(wrong.status == 401)
            #expect(wrong.headers["www-authenticate"]?.contains(#"error="invalid_token""#) == true)
            let basic = try await api.post("/v1/jobs", job, headers: ["Authorization": "Basic YWNtZTpzZWNyZXQ="])
            #expect(basic.status == 401)
            #expect(try await api.get("/v1/queues").status == 401)
            #expect(try await api.get("/healthz").status == 200, "probes need no key")
            #expect(try await api.get("/openapi.yaml").status == 200, "the contract needs no key")
            #expect(try await Self.depth(farm) == 0)

            let acme = api.with(key: standardKey)
            #expect(try await acme.post("/v1/jobs", job).status == 201)
            let premium = try await acme.post("/v1/jobs", #"{"kind": "echo", "tier": "premium"}"#)
            #expect(premium.status == 403, "the tenant may use premium, its key may not")
            #expect(premium.pointers == ["/tier"])
            let bulk = try await acme.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop"}, {"kind": "noop", "tier": "free"}, {"kind": "noop", "tier": "premium"}]}"#)
            #expect(bulk.status == 403)
            #expect(bulk.pointers == ["/jobs/1/tier", "/jobs/2/tier"])
            #expect(try await Self.depth(farm) == 1, "nothing of the refused bulk was enqueued")

            let stranger = try await api.with(key: strangerKey).post("/v1/jobs", job)
            #expect(stranger.status == 403, "a tenant missing from the tenants file")

            #expect(try await acme.call("GET", "/metrics").status == 403, "operator route, tenant key")
            #expect(try await api.with(key: operatorKey).call("GET", "/metrics").status == 200)
            #expect(try await api.call("GET", "/metrics").status == 401)

            #expect(try await keys.revoke(id: record.id))
            let revoked = try await acme.post("/v1/jobs", job)
            #expect(revoked.status == 401, "revoked: refused at the next request without a restart")
            #expect(try await keys.revoke(id: record.id) == false)
        }
        let listed = try await keys.list()
        #expect(Set(listed.map(\.tenant)) == ["ops", "stranger"])
    }

    @Test(.timeLimit(.minutes(1)))
    func aRevokedKeyIsRefusedWithinTheKeyCacheTTL() async throws {
        let farm = try TestRedis.farm()
        let keys = apiKeys(farm)
        let (key, record) = try await keys.create(tenant: "acme", tiers: ["standard"], isOperator: false)
        try await withDispatcher(farm: farm, configuration: Self.configuration(keyCacheTTL: .milliseconds(300))) { api in
            let acme = api.with(key: key)
            #expect(try await acme.get("/v1/queues").status == 200)
            #expect(try await keys.revoke(id: record.id))
            try await Task.sleep(for: .milliseconds(450))
            #expect(try await acme.get("/v1/queues").status == 401)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func bulkRequestsCountTheirJobsAndTierLimitsApply() async throws {
        let farm = try TestRedis.farm()
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: ["premium", "standard"], isOperator: false)
        // 10 jobs at once, then one every 10 s: nothing comes back during the test. Premium: 2 at once.
        let tenants = TenantDirectory(tenants: ["acme": TenantPolicy(
            rateLimit: RateLimitRule(perSecond: 0.1, burst: 10), tierRateLimits: ["premium": RateLimitRule(perSecond: 0.1, burst: 2)])])
        try await withDispatcher(farm: farm, configuration: Self.configuration(tenants: tenants)) { plain in
            let api = plain.with(key: key)
            let eight = try await api.post("/v1/jobs:bulk", "{\"jobs\": [" + Array(repeating: #"{"kind": "noop"}"#, count: 8).joined(separator: ",") + "]}")
            #expect(eight.status == 201)
            #expect(eight.headers["ratelimit"] == #""tenant";r=2;t=80"#)
            #expect(eight.headers["ratelimit-policy"] == #""tenant";q=10;w=100"#)

            let three = try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]}"#)
            #expect(three.status == 429, "8 + 3 jobs are over the burst of 10")
            #expect(Int(three.headers["retry-after"] ?? "") ?? 0 >= 9)
            #expect(three.headers["ratelimit"]?.hasPrefix(#""tenant";r=2;"#) == true)

            let premium = try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop", "tier": "premium"}, {"kind": "noop", "tier": "premium"}, {"kind": "noop", "tier": "premium"}]}"#)
            #expect(premium.status == 429, "3 premium jobs are over premium's burst of 2, whatever the wait")
            #expect(premium.json?["detail"]?.stringValue?.contains("send fewer jobs per request") == true)
            #expect(premium.headers["ratelimit-policy"] == #""tenant";q=10;w=100, "premium";q=2;w=20"#)

            let two = try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop", "tier": "premium"}, {"kind": "noop"}]}"#)
            #expect(two.status == 201, "the refused requests cost nothing")
            #expect(two.headers["ratelimit"]?.hasPrefix(#""tenant";r=0;"#) == true)
            #expect(try await api.post("/v1/jobs", #"{"kind": "noop"}"#).status == 429)
            #expect(try await Self.depth(farm) == 10)
        }
    }

    /// The limit lives in Redis: two `jobfarm serve` processes share one budget.
    @Test(.timeLimit(.minutes(1)))
    func twoServeProcessesShareOneRateLimit() async throws {
        let namespace = "tlimit" + JobID.make().suffix(10).lowercased()
        let tenants = FileManager.default.temporaryDirectory.appendingPathComponent("tenants-\(namespace).json")
        try #"{"tenants": {"acme": {"tiers": ["standard"], "rateLimit": {"perSecond": 0.1, "burst": 5}}}}"#
            .write(to: tenants, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: tenants) }
        let (status, output) = try await run(PackagePaths.jobfarm, [
            "apikey", "create", "--redis-url", TestRedis.url!, "--namespace", namespace, "--tenant", "acme", "--tiers", "standard",
        ], timeout: .seconds(30))
        #expect(status == 0, "\(output)")
        let key = try #require(output.split(separator: "\n").first { $0.hasPrefix("jfk_") }.map(String.init), "no key printed: \(output)")

        let one = try await ServeProcess.start(namespace: namespace, arguments: ["--tenants", tenants.path])
        defer { one.stop() }
        let two = try await ServeProcess.start(namespace: namespace, environment: ["JOBFARM_SERVE_TENANTS": tenants.path])
        defer { two.stop() }
        let contract = try OpenAPIContract.shared()
        let first = DispatcherClient(base: one.base, contract: contract, key: key)
        let second = DispatcherClient(base: two.base, contract: contract, key: key)
        let job = #"{"kind": "noop"}"#
        var statuses: [Int] = []
        for index in 0..<5 { statuses.append(try await (index.isMultiple(of: 2) ? first : second).post("/v1/jobs", job).status) }
        #expect(statuses == [201, 201, 201, 201, 201])
        let refusedByOne = try await first.post("/v1/jobs", job)
        let refusedByTwo = try await second.post("/v1/jobs", job)
        for refused in [refusedByOne, refusedByTwo] {
            #expect(refused.status == 429)
            #expect(Int(refused.headers["retry-after"] ?? "") ?? 0 >= 5)
            #expect(refused.headers["ratelimit-policy"] == #""tenant";q=5;w=50"#)
            #expect(refused.headers["ratelimit"]?.hasPrefix(#""tenant";r=0;t="#) == true)
            #expect(refused.contentType == "application/problem+json")
        }
        let listed = try await run(PackagePaths.jobfarm, ["apikey", "list", "--redis-url", TestRedis.url!, "--namespace", namespace], timeout: .seconds(30))
        #expect(listed.1.contains("acme") && listed.1.contains("tiers=standard") && !listed.1.contains(key), "\(listed.1)")
    }

    @Test(.timeLimit(.minutes(1)))
    func anIdempotencyKeyReplaysTheFirstJobsAndRefusesAnotherBody() async throws {
        let farm = try TestRedis.farm()
        let keys = apiKeys(farm)
        let (acmeKey, _) = try await keys.create(tenant: "acme", tiers: ["standard"], isOperator: false)
        let (otherKey, _) = try await keys.create(tenant: "other", tiers: ["standard"], isOperator: false)
        try await withDispatcher(farm: farm, configuration: Self.configuration()) { plain in
            let acme = plain.with(key: acmeKey)
            let job = #"{"kind": "echo", "payload": {"order": 4711}}"#
            let first = try await acme.post("/v1/jobs", job, headers: ["Idempotency-Key": "order-4711"])
            #expect(first.status == 201)
            #expect(first.headers["idempotent-replayed"] == nil)
            let id = try #require(first.json?["id"]?.stringValue)
            // The same JSON with other spacing and member order is the same request.
            let again = try await acme.post("/v1/jobs", #"{"payload":{"order":4711},"kind":"echo"}"#, headers: ["Idempotency-Key": "order-4711"])
            #expect(again.status == 201)
            #expect(again.json?["id"]?.stringValue == id)
            #expect(again.headers["idempotent-replayed"] == "true")
            #expect(again.headers["location"] == "/v1/jobs/\(id)")

            let conflict = try await acme.post("/v1/jobs", #"{"kind": "echo", "payload": {"order": 4712}}"#, headers: ["Idempotency-Key": "order-4711"])
            #expect(conflict.status == 422, "another body under the same key")
            let otherTenant = try await plain.with(key: otherKey).post("/v1/jobs", job, headers: ["Idempotency-Key": "order-4711"])
            #expect(otherTenant.status == 201)
            #expect(otherTenant.json?["id"]?.stringValue != id, "keys are scoped per tenant")
            #expect(otherTenant.headers["idempotent-replayed"] == nil)

            let bulk = #"{"jobs": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "echo", "id": "mine-1"}]}"#
            let bulkFirst = try await acme.post("/v1/jobs:bulk", bulk, headers: ["Idempotency-Key": "batch-1"])
            let bulkAgain = try await acme.post("/v1/jobs:bulk", bulk, headers: ["Idempotency-Key": "batch-1"])
            let firstIDs = items(bulkFirst.json?["jobs"]).compactMap { $0["id"]?.stringValue }
            #expect(firstIDs.count == 3 && firstIDs[2] == "mine-1")
            #expect(items(bulkAgain.json?["jobs"]).compactMap { $0["id"]?.stringValue } == firstIDs)
            #expect(bulkAgain.headers["idempotent-replayed"] == "true")
            let otherRoute = try await acme.post("/v1/jobs", job, headers: ["Idempotency-Key": "batch-1"])
            #expect(otherRoute.status == 422, "another route under the same key")
            #expect(otherRoute.json?["detail"]?.stringValue?.contains("Idempotency-Key") == true)
            #expect(try await acme.post("/v1/jobs", job, headers: ["Idempotency-Key": "with space"]).status == 400)
            #expect(try await Self.depth(farm) == 5, "one echo for acme, one for other, three of the bulk")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func concurrentRequestsWithOneIdempotencyKeyMakeOneJob() async throws {
        let farm = try TestRedis.farm()
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: ["standard"], isOperator: false)
        try await withDispatcher(farm: farm, configuration: Self.configuration()) { plain in
            let api = plain.with(key: key)
            for round in 0..<5 {
                let answers = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
                    for _ in 0..<12 {
                        group.addTask { try await api.post("/v1/jobs", #"{"kind": "noop"}"#, headers: ["Idempotency-Key": "race-\(round)"]) }
                    }
                    return try await group.reduce(into: [HTTPAnswer]()) { $0.append($1) }
                }
                #expect(answers.allSatisfy { $0.status == 201 })
                #expect(Set(answers.compactMap { $0.json?["id"]?.stringValue }).count == 1, "one id for every answer")
                #expect(answers.filter { $0.headers["idempotent-replayed"] == nil }.count == 1, "one first answer, the rest replays")
            }
            #expect(try await Self.depth(farm) == 5, "one job per key")
        }
    }

    /// A request that claimed its key and died before enqueueing (a crash, a lost connection): the retry enqueues the
    /// ids the claim chose, once.
    @Test(.timeLimit(.minutes(1)))
    func aRetryCompletesAClaimWhoseRequestDiedBeforeItsEnqueue() async throws {
        let farm = try TestRedis.farm()
        let (key, _) = try await apiKeys(farm).create(tenant: "acme", tiers: ["standard"], isOperator: false)
        let body = #"{"kind": "noop"}"#
        let store = RedisIdempotencyStore(client: RedisClient(configuration: farm.configuration.redis, name: "test-idem"),
                                          namespace: farm.configuration.namespace, ttl: .seconds(60))
        let died = IdempotencyRecord(fingerprint: IdempotencyRecord.fingerprint(route: "/v1/jobs", body: try JSONValue(parsing: body)),
                                     ids: ["claimed-then-died"], done: false)
        #expect(try await store.claim(tenant: "acme", key: "retry-me", record: died) == nil)
        #expect(try await farm.status(id: "claimed-then-died") == nil, "nothing enqueued yet")
        try await withDispatcher(farm: farm, configuration: Self.configuration()) { plain in
            let api = plain.with(key: key)
            for _ in 0..<2 {
                let answer = try await api.post("/v1/jobs", body, headers: ["Idempotency-Key": "retry-me"])
                #expect(answer.status == 201)
                #expect(answer.json?["id"]?.stringValue == "claimed-then-died")
                #expect(answer.headers["idempotent-replayed"] == "true")
            }
        }
        #expect(try await farm.status(id: "claimed-then-died")?.state == .queued)
        #expect(try await Self.depth(farm) == 1)
        var done = died
        done.done = true
        #expect(try await store.claim(tenant: "acme", key: "retry-me", record: died) == done, "marked done by the retry")
    }

    @Test(.timeLimit(.minutes(1)))
    func metricsCountRequestsSubmissionsAndRefusalsAsPrometheusText() async throws {
        let farm = try TestRedis.farm()
        let keys = apiKeys(farm)
        let (key, _) = try await keys.create(tenant: "acme", tiers: ["standard"], isOperator: false)
        let (operatorKey, _) = try await keys.create(tenant: "ops", tiers: ["standard"], isOperator: true)
        let configuration = Self.configuration(tenants: TenantDirectory(tenants: ["acme": TenantPolicy(rateLimit: RateLimitRule(perSecond: 0.1, burst: 3))]))
        let metrics = DispatcherMetrics()
        metrics.gauge("jobfarm_outbox_depth", help: "Submissions spooled while Redis is down.").set(to: 3)
        let access = AccessControl(farm: farm, configuration: configuration, metrics: metrics)
        let text = try await withDispatcher(farm: farm, configuration: configuration, access: access) { plain in
            let api = plain.with(key: key)
            #expect(try await api.post("/v1/jobs", #"{"kind": "echo"}"#).status == 201)
            #expect(try await api.post("/v1/jobs:bulk", #"{"jobs": [{"kind": "noop"}, {"kind": "noop"}]}"#).status == 201)
            #expect(try await api.post("/v1/jobs", #"{"kind": "echo"}"#).status == 429)
            #expect(try await api.get("/v1/jobs/nope").status == 404)
            let answer = try await plain.with(key: operatorKey).call("GET", "/metrics")
            #expect(answer.status == 200)
            #expect(answer.contentType.hasPrefix("text/plain"))
            return answer.text
        }
        for expected in [
            #"jobfarm_http_requests_total{route="/v1/jobs",method="POST",status="201"} 1"#,
            #"jobfarm_http_requests_total{route="/v1/jobs",method="POST",status="429"} 1"#,
            #"jobfarm_http_requests_total{route="/v1/jobs/{id}",method="GET",status="404"} 1"#,
            #"jobfarm_jobs_submitted_total{kind="echo",tier="standard",tenant="acme"} 1"#,
            #"jobfarm_jobs_submitted_total{kind="noop",tier="standard",tenant="acme"} 2"#,
            #"jobfarm_rate_limited_requests_total{tenant="acme"} 1"#,
            #"jobfarm_http_request_duration_seconds_bucket{route="/v1/jobs:bulk",method="POST",le="+Inf"} 1"#,
            "# TYPE jobfarm_http_request_duration_seconds histogram",
            "jobfarm_outbox_depth 3",
        ] {
            #expect(text.contains(expected), "missing \(expected) in:\n\(text)")
        }
        // promtool (Debian's prometheus package) when installed; otherwise the exposition format's line shapes.
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(UUID().uuidString).txt")
        try text.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let (found, _) = try await run("/bin/bash", ["-c", "command -v promtool"], timeout: .seconds(10))
        if found == 0 {
            let (status, output) = try await run("/bin/bash", ["-c", "promtool check metrics < '\(file.path)'"], timeout: .seconds(30))
            #expect(status == 0, "promtool check metrics:\n\(output)")
        }
        let sample = try Regex(#"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? [-+0-9.eEInfa]+$"#)
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.wholeMatch(of: sample) != nil, "not a Prometheus sample line: \(line)")
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func anUndocumentedMethodOnADocumentedPathIs405WithAllow() async throws {
        let farm = try TestRedis.farm()
        try await withDispatcher(farm: farm) { api in
            for (method, path, allow) in [("PUT", "/v1/jobs", "POST"), ("GET", "/v1/jobs:bulk", "POST"),
                                          ("POST", "/v1/jobs/01ABC", "DELETE, GET"), ("PATCH", "/v1/jobs/x/wait", "GET"),
                                          ("DELETE", "/healthz", "GET"), ("POST", "/metrics", "GET")] {
                let answer = try await api.call(method, path, json: method == "GET" ? nil : "{}", checkContract: false)
                #expect(answer.status == 405, "\(method) \(path)")
                #expect(answer.headers["allow"] == allow, "\(method) \(path)")
                #expect(answer.contentType == "application/problem+json")
            }
            #expect(try await api.call("GET", "/v1/nothing", checkContract: false).status == 404)
            #expect(try await api.call("GET", "/v1/jobs/a/b/c", checkContract: false).status == 404)
        }
    }
}

/// The tenants file and the access settings, without a server.
@Suite("Dispatcher access settings")
struct AccessSettingsTests {
    @Test func theReadmeTenantsFileParsesAndMistakesAreNamed() throws {
        let readme = try String(contentsOf: PackagePaths.root.appendingPathComponent("README.md"), encoding: .utf8)
        let sample = try #require(codeBlock(readme, info: "json"), "README.md has no ```json tenants file")
        let tiers = ["premium", "standard", "free"]
        let directory = try TenantDirectory(parsing: sample, tiers: tiers)
        #expect(directory.policy(for: "acme") == TenantPolicy(
            tiers: ["premium", "standard"], rateLimit: RateLimitRule(perSecond: 100, burst: 200),
            tierRateLimits: ["premium": RateLimitRule(perSecond: 20, burst: 40)]))
        #expect(directory.policy(for: "anyone")?.tiers == ["standard", "free"], "\"*\" is the rest")
        #expect(TenantDirectory(tenants: [:], fallback: nil).policy(for: "anyone") == nil)
        for (text, named) in [(#"{"tenants": {"a": {"tiers": ["gold"]}}}"#, "tiers must be among"),
                              (#"{"tenants": {"a": {"rateLimit": {"perSecond": 0, "burst": 1}}}}"#, "rateLimit"),
                              (#"{"tenants": {"a": {"burst": 1}}}"#, "unknown member 'burst'"),
                              (#"{"tenants": {"a b": {}}}"#, "tenant name 'a b'"),
                              (#"{"tenant": {}}"#, "needs an object \"tenants\"")] {
            let error = #expect(throws: JobFarmError.self) { try TenantDirectory(parsing: text, tiers: tiers) }
            #expect(error.map { "\($0)".contains(named) } == true, "\(String(describing: error)) should name \(named)")
        }
    }

    @Test func authenticationAndKeyCacheFromTheEnvironment() throws {
        #expect(try DispatcherConfiguration(environment: [:]).authentication == .apiKeys, "keys are required unless turned off")
        let off = try DispatcherConfiguration(environment: ["JOBFARM_SERVE_AUTH": "off", "JOBFARM_SERVE_KEY_CACHE_TTL": "250ms"])
        #expect(off.authentication == .disabled)
        #expect(off.keyCacheTTL == .milliseconds(250))
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_AUTH": "maybe"]) }
        #expect(throws: JobFarmError.self) { try DispatcherConfiguration(environment: ["JOBFARM_SERVE_KEY_CACHE_TTL": "5m"]) }
    }

    @Test func keysAreMadeRandomAndStoredAsTheirSHA256() {
        let (id, key) = APIKeySecret.make()
        #expect(key.hasPrefix("jfk_\(id)_") && key.count == 4 + 12 + 1 + 64)
        #expect(APIKeySecret.hash(key).count == 64 && APIKeySecret.hash(key) != APIKeySecret.hash(key + "x"))
        #expect(APIKeySecret.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }
}
