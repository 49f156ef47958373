import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import RedisClient
import Testing

/// How error replies and client failures are classified, and what their messages tell the user to do.
@Suite("Error mapping")
struct ErrorMappingTests {
    @Test func errorRepliesAreClassifiedByTheirPrefix() {
        #expect(RedisError(reply: "NOAUTH Authentication required.") == .authenticationRequired("NOAUTH Authentication required."))
        #expect(RedisError(reply: "WRONGPASS invalid username-password pair or user is disabled.")
            == .authenticationFailed("WRONGPASS invalid username-password pair or user is disabled."))
        #expect(RedisError(reply: "NOPERM User farm has no permissions to run the 'evalsha' command")
            == .permissionDenied("NOPERM User farm has no permissions to run the 'evalsha' command"))
        #expect(RedisError(reply: "LOADING Redis is loading the dataset in memory") == .notReady("LOADING Redis is loading the dataset in memory"))
        #expect(RedisError(reply: "ERR unknown command 'FOO'", context: "FOO") == .server("FOO: ERR unknown command 'FOO'"))
        let scriptError = "ERR user_script:1: attempt to perform arithmetic on a nil value script: cd2048, on @user_script:1."
        #expect(RedisError(reply: scriptError, script: "fetch") == .scriptFailed(script: "fetch", message: scriptError))
        // A script that raises its own error (no ERR prefix) is a script error too.
        #expect(RedisError(reply: "bad thing", script: "fetch") == .scriptFailed(script: "fetch", message: "bad thing"))
    }

    @Test func wrongTypeNamesTheKeyWhenKnown() {
        // Redis' own message names no key: the caller's key is used when it knows one.
        let plain = "WRONGTYPE Operation against a key holding the wrong kind of value"
        #expect(RedisError(reply: plain) == .wrongType(key: nil, message: plain))
        #expect(RedisError(reply: plain, key: "jf:queues") == .wrongType(key: "jf:queues", message: plain))
        // Inside a script, Redis appends the script's SHA and line, which are not keys.
        let inScript = plain + " script: 0831e2c9533e8cbed57da1d2a40c4d744e66cf6c, on @user_script:1."
        guard case .wrongType(nil, let message) = RedisError(reply: inScript, script: "fetch") else {
            Issue.record("WRONGTYPE inside a script is a wrong-type error")
            return
        }
        #expect(message.contains("fetch"))
        // Scripts that check types before they write name the key in the message: any wording after WRONGTYPE.
        for (reply, key) in [
            ("WRONGTYPE jf:{q}:signal is a string, expected a list", "jf:{q}:signal"),
            ("WRONGTYPE key 'jf:{q}:inflight' holds a list, not a zset", "jf:{q}:inflight"),
            ("WRONGTYPE: jf:{q}:t:standard must be a list", "jf:{q}:t:standard"),
            ("WRONGTYPE jf:{reports}:dead is hash (expected zset); delete or rename it", "jf:{reports}:dead"),
        ] {
            guard case .wrongType(let found, _) = RedisError(reply: reply, script: "fetch") else {
                Issue.record("\(reply) is a wrong-type error")
                continue
            }
            #expect(found == key, "\(reply)")
        }
    }

    @Test func queueEngineErrorsKeepTheClass() {
        let cases: [(RedisError, (JobFarmError) -> Bool)] = [
            (.connectionFailed("x"), { if case .redisUnreachable = $0 { true } else { false } }),
            (.connectionLost("x"), { if case .connectionLost = $0 { true } else { false } }),
            (.authenticationRequired("NOAUTH"), { if case .authenticationRequired = $0 { true } else { false } }),
            (.authenticationFailed("WRONGPASS"), { if case .authenticationFailed = $0 { true } else { false } }),
            (.permissionDenied("NOPERM"), { if case .authenticationFailed = $0 { true } else { false } }),
            (.invalidURL("x"), { if case .redisConfiguration = $0 { true } else { false } }),
            (.invalidDatabase(index: 99, available: 16, message: "ERR DB index is out of range"), { if case .redisConfiguration = $0 { true } else { false } }),
            (.notReady("LOADING"), { if case .redisNotReady = $0 { true } else { false } }),
            (.scriptFailed(script: "fetch", message: "boom"), { $0 == .scriptFailed(script: "fetch", message: "boom") }),
            (.wrongType(key: "jf:queues", message: "WRONGTYPE"), { $0 == .wrongType(key: "jf:queues", operation: "queues", message: "WRONGTYPE") }),
            (.server("ERR x"), { if case .redisFailed = $0 { true } else { false } }),
        ]
        for (redisError, matches) in cases {
            let error = JobFarmError(redisError, operation: "queues")
            #expect(matches(error), "\(redisError) → \(error)")
            #expect(error.isConnectionError == redisError.isConnectionError, "\(redisError)")
            #expect(error.isConfigurationError == redisError.isConfigurationError, "\(redisError)")
        }
        #expect(JobFarmError(reply: "WRONGTYPE jf:{q}:signal is a string", script: "fetch")
            == .wrongType(key: "jf:{q}:signal", operation: "fetch", message: "script fetch: WRONGTYPE jf:{q}:signal is a string"))
        #expect(JobFarmError(reply: "ERR user_script:3: boom", script: "enqueue") == .scriptFailed(script: "enqueue", message: "ERR user_script:3: boom"))
    }

    @Test func messagesSayWhatToDo() {
        let noPassword = JobFarmError(.authenticationRequired("NOAUTH Authentication required."), operation: "enqueue")
        #expect("\(noPassword)".contains("this Redis needs a password: add it to --redis-url (redis://:PASSWORD@host:port) or JOBFARM_REDIS_URL"))
        #expect("\(RedisError.authenticationFailed("WRONGPASS invalid username-password pair"))".contains("refused the password"))
        let noPasswordSet = RedisError.authenticationFailed("ERR AUTH <password> called without any password configured for the default user.")
        #expect("\(noPasswordSet)".contains("Remove the password"))
        let database = RedisError.invalidDatabase(index: 99, available: 16, message: "ERR DB index is out of range")
        #expect("\(database)".contains("no database 99"))
        #expect("\(database)".contains("0…15"))
        #expect(!"\(database)".contains("authentication"))
        let unknownRange = RedisError.invalidDatabase(index: 99, available: nil, message: "ERR DB index is out of range")
        #expect("\(unknownRange)".contains("database 99"))
        #expect("\(RedisError.wrongType(key: "jf:{q}:signal", message: "WRONGTYPE"))".contains("redis-cli TYPE jf:{q}:signal"))
        #expect("\(RedisError.scriptFailed(script: "fetch", message: "boom"))".contains("'fetch'"))
        #expect("\(RedisError.connectionLost("reading the reply"))".contains("unknown"))
        #expect("\(RedisError.server("OOM command not allowed when used memory > 'maxmemory'."))".contains("maxmemory"))
    }

    @Test func invalidURLMessagesMaskThePassword() {
        for url in ["redis://:hunter2@127.0.0.1:abc", "redis://farm:hunter2@127.0.0.1:abc/x", "unix:///tmp/r.sock?password=hunter2&bogus=1"] {
            do {
                _ = try RedisConfiguration(url: url)
                Issue.record("\(url) parsed")
            } catch {
                #expect(!"\(error)".contains("hunter2"), "\(error)")
                #expect((error as? RedisError)?.isConfigurationError == true)
            }
        }
    }

    @Test func singleKeyCommandsNameTheirKey() {
        #expect(RedisCommand("SMEMBERS", "jf:queues").singleKey == "jf:queues")
        #expect(RedisCommand("smembers", "jf:queues").name == "SMEMBERS")
        #expect(RedisCommand("BLPOP", "a", "b", "1").singleKey == nil)
        #expect(RedisCommand("PING").singleKey == nil)
    }
}

/// Typed errors from a real Redis: the test server of scripts/test, and servers of a test's own for passwords,
/// database ranges and dropped connections.
@Suite("Redis errors from real servers", .serialized, .timeLimit(.minutes(2)), .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct RedisErrorIntegrationTests {
    @Test func missingAndWrongPasswordsAreAuthenticationErrors() async throws {
        let server = try OwnRedisServer(extraArguments: ["--requirepass", "s3cret"])
        server.authPassword = "s3cret"
        // No password: what used to surface as `NOAUTH` while loading a script.
        let anonymous = try TestRedis.farm(redis: try RedisConfiguration(url: server.url))
        do {
            _ = try await anonymous.enqueue(EnqueueRequest(kind: "noop"))
            Issue.record("enqueue without a password succeeded")
        } catch let error as JobFarmError {
            guard case .authenticationRequired = error else { throw error }
            #expect("\(error)".contains("this Redis needs a password: add it to --redis-url (redis://:PASSWORD@host:port) or JOBFARM_REDIS_URL"))
            #expect(error.isConfigurationError)
        }
        // The wire layer says the same to a direct caller, for a command and for a script.
        let client = RedisClient(configuration: try RedisConfiguration(url: server.url))
        defer { client.close() }
        await #expect(throws: RedisError.authenticationRequired("NOAUTH Authentication required.")) { try await client.execute("PING") }
        do {
            try await client.run(RedisScript(name: "probe", source: "return 1"), keys: [], arguments: [])
            Issue.record("a script ran without a password")
        } catch RedisError.authenticationRequired {}
        // A wrong password.
        let wrong = try TestRedis.farm(redis: try RedisConfiguration(url: "redis://:nope@127.0.0.1:\(server.port)"))
        do {
            _ = try await wrong.stats()
            Issue.record("a wrong password was accepted")
        } catch let error as JobFarmError {
            guard case .authenticationFailed = error else { throw error }
            #expect("\(error)".contains("refused the password"))
        }
        // The right one works.
        let good = try TestRedis.farm(redis: try RedisConfiguration(url: "redis://:s3cret@127.0.0.1:\(server.port)"))
        try await good.checkConnection()
    }

    @Test func databaseOutOfRangeIsAConfigurationErrorWithTheRange() async throws {
        let url = try #require(TestRedis.url)
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: url + "/99"))
        do {
            try await farm.checkConnection()
            Issue.record("database 99 was accepted")
        } catch let error as JobFarmError {
            guard case .redisConfiguration(_, .invalidDatabase(99, let available, _)) = error else { throw error }
            #expect(available == 16, "the test server has Redis' default 16 databases")
            #expect("\(error)".contains("no database 99"))
            #expect("\(error)".contains("0…15"))
            #expect(!"\(error)".contains("authentication"))
        }
    }

    @Test func unreachableRedisIsAConnectionErrorAtConnect() async throws {
        let port = OwnRedisServer.freePort()
        let farm = try TestRedis.farm(redis: try RedisConfiguration(url: "redis://127.0.0.1:\(port)"))
        do {
            try await farm.checkConnection()
            Issue.record("connected to a port nobody listens on")
        } catch let error as JobFarmError {
            guard case .redisUnreachable(_, .connectionFailed) = error else { throw error }
            #expect(error.isConnectionError)
            #expect(!error.isConfigurationError)
        }
    }

    @Test func droppedConnectionMidCommandIsConnectionLost() async throws {
        let server = try OwnRedisServer()
        let blocked = RedisClient(configuration: try RedisConfiguration(url: server.url))
        let killer = RedisClient(configuration: try RedisConfiguration(url: server.url))
        defer {
            blocked.close()
            killer.close()
        }
        _ = try await blocked.execute("PING")
        let pop = Task { try await blocked.execute(RedisCommand("BLPOP", "nothing", "10"), blockingFor: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(300))
        _ = try await killer.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        do {
            _ = try await pop.value
            Issue.record("BLPOP returned although its connection was killed")
        } catch RedisError.connectionLost {}
    }

    @Test func scriptAndWrongTypeErrorsAreTyped() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        let stringKey = "\(farm.configuration.namespace):a-string"
        _ = try await client.execute("SET", stringKey, "x")
        // A Lua runtime error names the script.
        do {
            try await client.run(RedisScript(name: "broken", source: "return nil + 1"), keys: [], arguments: [])
            Issue.record("a broken script succeeded")
        } catch RedisError.scriptFailed(let script, let message) {
            #expect(script == "broken")
            #expect(message.contains("arithmetic"))
        }
        // WRONGTYPE from a command inside a script, and from a script that checks types and names the key.
        let push = RedisScript(name: "push", source: "return redis.call('LPUSH', KEYS[1], 'x')")
        await #expect(throws: RedisError.self) { try await client.run(push, keys: [stringKey], arguments: []) }
        do {
            try await client.run(push, keys: [stringKey], arguments: [])
        } catch RedisError.wrongType {}
        let checking = RedisScript(
            name: "checking",
            source: "if redis.call('TYPE', KEYS[1]).ok ~= 'list' then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is not a list') end")
        do {
            try await client.run(checking, keys: [stringKey], arguments: [])
            Issue.record("the checking script accepted a string")
        } catch RedisError.wrongType(let key, _) {
            #expect(key == stringKey)
        }
        // The queue engine: the registry set of queues replaced by a string.
        _ = try await client.execute("SET", QueueKeys.registry(namespace: farm.configuration.namespace), "oops")
        do {
            _ = try await farm.queues()
            Issue.record("queues() read a string as the registry")
        } catch JobFarmError.wrongType(let key, let operation, _) {
            #expect(key == QueueKeys.registry(namespace: farm.configuration.namespace))
            #expect(operation == "queues")
        }
        _ = try await client.execute("DEL", stringKey, QueueKeys.registry(namespace: farm.configuration.namespace))
    }
}
