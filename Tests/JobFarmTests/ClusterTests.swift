import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import RedisClient
import Testing

/// Key slots and the cluster URL: pure unit tests (vectors from the Redis Cluster specification and CLUSTER KEYSLOT).
@Suite("Redis Cluster slots and URLs")
struct ClusterSlotTests {
    @Test func crc16AndSlotsMatchTheSpecification() {
        #expect(ClusterSlot.crc16(Array("123456789".utf8)) == 0x31C3)
        #expect(ClusterSlot.of("123456789") == 12739)
        #expect(ClusterSlot.of("somekey") == 11058)
        #expect(ClusterSlot.of("foo") == 12182)
        #expect(ClusterSlot.of("bar") == 5061)
        #expect(ClusterSlot.of("hello") == 866)
        #expect(ClusterSlot.of("") == 0)
        // Hash tags: only the bytes between the first { and the next } count, when there are some.
        #expect(ClusterSlot.of("{user1000}.following") == 3443)
        #expect(ClusterSlot.of("{user1000}.followers") == 3443)
        #expect(ClusterSlot.of("foo{}{bar}") == 8363)  // empty tag: the whole key
        #expect(ClusterSlot.of("foo{{bar}}zap") == ClusterSlot.of("{bar"))
        #expect(ClusterSlot.of("foo{bar}{zap}") == ClusterSlot.of("bar"))
        #expect(ClusterSlot.of("jf:{emails}:t:standard") == ClusterSlot.of("emails"))
        #expect(ClusterSlot.of("jf:{emails}:t:standard") == 3728)
    }

    @Test func clusterURLsParse() throws {
        let config = try RedisConfiguration(url: "redis+cluster://:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
        #expect(config.isCluster)
        #expect(config.clusterSeeds == [.tcp(host: "10.0.0.1", port: 7000), .tcp(host: "10.0.0.2", port: 7001), .tcp(host: "::1", port: 7002)])
        #expect(config.endpoint == .tcp(host: "10.0.0.1", port: 7000))
        #expect(config.password == "s3cret")
        #expect(config.description == "redis+cluster://:***@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")
        #expect(try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000/0").clusterSeeds.count == 1)
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000/3") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000,,127.0.0.1:7001") }
        #expect(try RedisConfiguration(url: "redis://127.0.0.1:7000").isCluster == false)
        let durable = try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000,127.0.0.1:7001?durable=1&durableTimeout=250")
        #expect(durable.durableReplicas == 1 && durable.durableTimeout == .milliseconds(250) && durable.clusterSeeds.count == 2)
        #expect(durable.description == "redis+cluster://127.0.0.1:7000,127.0.0.1:7001?durable=1")
        #expect(try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000?durable=true").durableReplicas == 1)
        #expect(try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000").durableReplicas == 0)
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000?durable=x") }
        #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis+cluster://127.0.0.1:7000?durible=1") }
    }
}

/// The cluster client and the queue engine against the 3-master, 3-replica cluster scripts/test starts.
@Suite("Redis Cluster", .serialized, .enabled(if: TestRedis.clusterURL != nil, "needs JOBFARM_TEST_REDIS_CLUSTER_URL (scripts/test sets it)"))
struct ClusterTests {
    func client(_ name: String = "cluster-test") throws -> RedisClient {
        RedisClient(configuration: try TestServer.cluster.configuration, name: name)
    }

    /// A plain client of one node.
    func node(_ address: String) throws -> RedisClient { try RedisClient(url: "redis://\(address)") }

    @Test func commandsAndPipelinesAreRoutedToEveryMaster() async throws {
        let client = try client()
        defer { client.close() }
        let masters = try await client.masters()
        #expect(masters.count == 3)
        let prefix = "t:route:\(JobID.make())"
        let keys = (0..<60).map { "\(prefix):\($0)" }
        // One pipeline over keys of every master: the replies come back in request order.
        let sets = try await client.send(keys.map { RedisCommand("SET", $0, "v-\($0)") })
        #expect(sets.allSatisfy { $0 == .status("OK") })
        let gets = try await client.send(keys.map { RedisCommand("GET", $0) })
        #expect(gets.map(\.string) == keys.map { "v-\($0)" })
        // Each key is on the master that owns its slot, and the keys reached all three.
        var holders = Set<String>()
        for address in masters {
            let plain = try node(address)
            defer { plain.close() }
            for key in keys where try await plain.send([RedisCommand("EXISTS", key)])[0] == .integer(1) { holders.insert(address) }
        }
        #expect(holders.count == 3)
        let pongs = try await client.everyMaster(RedisCommand("PING"))
        #expect(pongs.map(\.reply) == [.status("PONG"), .status("PONG"), .status("PONG")])
        _ = try await client.send(keys.map { RedisCommand("DEL", $0) })
    }

    /// Scripts are loaded per shard: after SCRIPT FLUSH on every master, each shard answers NOSCRIPT once and the
    /// client loads the script there and runs it again.
    @Test func scriptsAreLoadedOnEachShard() async throws {
        let client = try client()
        defer { client.close() }
        let script = RedisScript(name: "incr", source: "return redis.call('INCR', KEYS[1]) -- cluster test")
        let keys = (0..<12).map { _ in "t:script:{\(JobID.make())}" }
        try await client.load([script])
        let first = try await client.pipeline(keys.map { .script(script, keys: [$0], arguments: []) })
        #expect(first == Array(repeating: .integer(1), count: keys.count))
        _ = try await client.everyMaster(RedisCommand("SCRIPT", "FLUSH"))
        let second = try await client.pipeline(keys.map { .script(script, keys: [$0], arguments: []) })
        #expect(second == Array(repeating: .integer(2), count: keys.count))
        _ = try await client.send(keys.map { RedisCommand("DEL", $0) })
    }

    /// A slot moved by hand (`CLUSTER SETSLOT … MIGRATING/IMPORTING`, `MIGRATE`, `SETSLOT … NODE`): while it
    /// migrates, the client follows `ASK` for the keys already moved and new keys; afterwards it follows `MOVED`
    /// and reads the new map. The slot is moved back at the end.
    @Test func movedAndAskAreFollowedWhileASlotMigrates() async throws {
        let client = try client()
        defer { client.close() }
        let tag = "mig\(JobID.make().suffix(8))"
        let slot = ClusterSlot.of(tag)
        let old = "t:{\(tag)}:old", fresh = "t:{\(tag)}:new", stay = "t:{\(tag)}:stay"
        _ = try await client.send([RedisCommand("SET", old, "1"), RedisCommand("SET", stay, "2")])
        let masters = try await client.masters()
        var source = ""
        for address in masters {
            let plain = try node(address)
            defer { plain.close() }
            if try await plain.send([RedisCommand("EXISTS", old)])[0] == .integer(1) { source = address }
        }
        let target = try #require(masters.first { $0 != source && !source.isEmpty })
        let from = try node(source), to = try node(target)
        defer { from.close(); to.close() }
        let sourceID = try #require(try await from.execute("CLUSTER", "MYID").string)
        let targetID = try #require(try await to.execute("CLUSTER", "MYID").string)
        func startMoving(_ slot: Int, from: RedisClient, fromID: String, to: RedisClient, toID: String) async throws {
            try await to.execute("CLUSTER", "SETSLOT", String(slot), "IMPORTING", fromID)
            try await from.execute("CLUSTER", "SETSLOT", String(slot), "MIGRATING", toID)
        }
        try await startMoving(slot, from: from, fromID: sourceID, to: to, toID: targetID)
        let targetPort = String(target.split(separator: ":").last!)
        do {
            // Migrating: `old` moves now; `stay` is still on the source; `fresh` does not exist yet (→ ASK to the target).
            try await from.execute(RedisCommand(["MIGRATE", "127.0.0.1", targetPort, "", "0", "5000", "KEYS", old]))
            #expect(try await client.execute("GET", old).string == "1")  // ASK → ASKING + GET on the target
            #expect(try await client.execute("GET", stay).string == "2")  // still served by the source
            #expect(try await client.execute("SET", fresh, "3") == .status("OK"))  // ASK → created on the target
            #expect(try await to.send([RedisCommand("ASKING"), RedisCommand("GET", fresh)])[1].string == "3")
            try await from.execute(RedisCommand(["MIGRATE", "127.0.0.1", targetPort, "", "0", "5000", "KEYS", stay]))
            // Done: every master learns the new owner; the client's map is stale (→ MOVED, map re-read).
            for address in masters {
                let plain = try node(address)
                defer { plain.close() }
                try await plain.execute("CLUSTER", "SETSLOT", String(slot), "NODE", targetID)
            }
            #expect(try await client.send([RedisCommand("GET", old), RedisCommand("GET", stay), RedisCommand("GET", fresh)]).map(\.string) == ["1", "2", "3"])
        }
        // Move it back, so the other tests see the cluster as it was.
        try await startMoving(slot, from: to, fromID: targetID, to: from, toID: sourceID)
        try await to.execute(RedisCommand(["MIGRATE", "127.0.0.1", String(source.split(separator: ":").last!), "", "0", "5000", "KEYS", old, stay, fresh]))
        for address in masters {
            let plain = try node(address)
            defer { plain.close() }
            try await plain.execute("CLUSTER", "SETSLOT", String(slot), "NODE", sourceID)
        }
        #expect(try await client.send([RedisCommand("GET", old), RedisCommand("DEL", old), RedisCommand("DEL", stay), RedisCommand("DEL", fresh)])[0].string == "1")
    }

    /// Queues land on all three masters; one worker serving all of them (one blocking connection per queue) runs
    /// every job, and `stats` adds up across shards.
    @Test func queuesSpreadOverEveryMasterAndOneWorkerServesThemAll() async throws {
        let farm = try TestRedis.farm(on: .cluster)
        let client = try client()
        defer { client.close() }
        let masters = try await client.masters()
        // Pick queue names until every master owns at least one.
        var queues: [String] = []
        var owners = Set<String>()
        let ownerOfSlot = try await slotOwners(client)
        for n in 0..<200 where owners.count < 3 {
            let queue = "q\(n)"
            if owners.insert(try #require(ownerOfSlot(ClusterSlot.of(queue)))).inserted { queues.append(queue) }
        }
        queues.append("q-extra")  // a fourth queue, on a master that has one already
        #expect(Set(masters) == owners)
        var ids: [String] = []
        for (index, queue) in queues.enumerated() {
            for j in 0..<5 { ids.append(try await farm.enqueue(EnqueueRequest(kind: "echo", queue: queue, payload: .object(["n": .number(Double(index * 10 + j))])))) }
        }
        #expect(Set(try await farm.queues()) == Set(queues))
        try await withWorker(farm: farm, queues: queues, concurrency: 4) { _ in
            try await eventually(timeout: .seconds(20), "every job succeeded") {
                let stats = try await farm.stats(queues: queues)
                return stats.reduce(0) { $0 + ($1.counters["succeeded"] ?? 0) } == ids.count
            }
        }
        for id in ids { #expect(try await farm.status(id: id)?.state == .succeeded) }
    }

    /// A job enqueued to a second queue while the worker is blocked on both wakes it at once (not at its idle wait):
    /// the first queue's wait is ended by `CLIENT UNBLOCK`.
    @Test func aJobInAnyServedQueueWakesTheWorker() async throws {
        let farm = try TestRedis.farm(on: .cluster)
        let client = try client()
        defer { client.close() }
        let ownerOfSlot = try await slotOwners(client)
        let first = "a0"
        var second = "b0"
        for n in 0..<100 where ownerOfSlot(ClusterSlot.of("b\(n)")) != ownerOfSlot(ClusterSlot.of(first)) {
            second = "b\(n)"
            break
        }
        let fetcher = try self.client("fetch")
        defer { fetcher.close() }
        for _ in 0..<2 {
            let started = ContinuousClock.now
            let enqueuer = Task {
                try await Task.sleep(for: .milliseconds(150))
                return try await farm.enqueue(EnqueueRequest(kind: "echo", queue: second, payload: .object([:])))
            }
            let jobs = try await farm.awaitAndFetch(queues: [first, second], count: 4, worker: "w", timeout: .seconds(5), on: fetcher)
            let id = try await enqueuer.value
            #expect(jobs.map(\.id) == [id])
            #expect(ContinuousClock.now - started < .seconds(2))
        }
        // Nothing anywhere: the wait ends at its timeout with nothing.
        let started = ContinuousClock.now
        #expect(try await farm.awaitAndFetch(queues: [first, second], count: 4, worker: "w", timeout: .milliseconds(300), on: fetcher).isEmpty)
        #expect(ContinuousClock.now - started < .seconds(2))
    }

    /// `durable=N`: an enqueue returns once N replicas have it (`WAIT`), and throws when fewer confirm it in time
    /// (each master of the test cluster has one replica, so 2 can never be reached); the job is on the master.
    @Test func durableEnqueuesWaitForReplicasAndFailWhenTooFewConfirm() async throws {
        let farm = try TestRedis.farm(on: .cluster)
        let url = try #require(TestRedis.clusterURL)
        var oneReplica = farm.configuration
        oneReplica.redis = try RedisConfiguration(url: url + "?durable=1")
        let durable = try JobFarm(configuration: oneReplica)
        let id = try await durable.enqueue(EnqueueRequest(kind: "echo", queue: "durable", payload: .object([:])))
        #expect(try await farm.status(id: id)?.state == .queued)
        var twoReplicas = farm.configuration
        twoReplicas.redis = try RedisConfiguration(url: url + "?durable=2&durableTimeout=100")
        let tooMany = try JobFarm(configuration: twoReplicas)
        let refusedID = JobID.make()
        let started = ContinuousClock.now
        do {
            _ = try await tooMany.enqueue(EnqueueRequest(kind: "echo", queue: "durable", payload: .object([:]), id: refusedID))
            Issue.record("an enqueue no second replica confirmed returned")
        } catch {
            #expect("\(error)".contains("reached 1 of 2 replicas"), "\(error)")
        }
        // The farm sends a not-ready enqueue again with the same id for a while (as after a lost connection).
        #expect(ContinuousClock.now - started < .seconds(20))
        // It was written on the master (and its one replica): sending it again adds nothing.
        #expect(try await farm.status(id: refusedID)?.state == .queued)
        #expect(try await durable.enqueue(EnqueueRequest(kind: "echo", queue: "durable", payload: .object([:]), id: refusedID)) == refusedID)
        #expect(try await farm.stats(queues: ["durable"])[0].counters["enqueued"] == 2)
    }

    /// A waiter whose client was given one master only is woken by the event of a job on a queue another master
    /// owns: its sharded subscription (`SSUBSCRIBE`) is on the queue's own master, and the scripts `SPUBLISH` there.
    @Test func aWaiterIsWokenByAJobOnAQueueOfAnotherMaster() async throws {
        let farm = try TestRedis.farm(on: .cluster)
        let client = try client()
        defer { client.close() }
        let masters = try await client.masters()
        let ownerOfSlot = try await slotOwners(client)
        var queue = "w0"
        for n in 0..<200 where ownerOfSlot(ClusterSlot.of("w\(n)")) != masters[0] {
            queue = "w\(n)"
            break
        }
        let home = try #require(ownerOfSlot(ClusterSlot.of(queue)))
        #expect(home != masters[0])
        var throughOne = farm.configuration
        throughOne.redis = try RedisConfiguration(url: "redis+cluster://\(masters[0])")
        let waiter = try JobFarm(configuration: throughOne)
        let channel = QueueKeys(namespace: farm.configuration.namespace, queue: queue).events
        for _ in 0..<2 {
            let id = try await farm.enqueue(EnqueueRequest(kind: "echo", queue: queue, payload: .object([:])))
            let waiting = Task { try await waiter.wait(for: id, timeout: .seconds(20)) }
            try await eventually(timeout: .seconds(5), "the waiter subscribed on the queue's master") {
                let plain = try node(home)
                defer { plain.close() }
                return try await plain.send([RedisCommand("PUBSUB", "SHARDNUMSUB", channel)])[0].array?[1].int == 1
            }
            // Run the job now: the waiter has just read it (queued), so only the event can wake it before its 5 s
            // re-read.
            let started = ContinuousClock.now
            let fetcher = try self.client("fetch")
            defer { fetcher.close() }
            let jobs = try await farm.awaitAndFetch(queues: [queue], count: 1, worker: "w", timeout: .seconds(2), on: fetcher)
            let job = try #require(jobs.first)
            #expect(try await farm.report([(job, .succeeded(result: "true"))], queue: queue, on: fetcher).isEmpty)
            #expect(try await waiting.value.state == .succeeded)
            #expect(ContinuousClock.now - started < .seconds(3), "woken \(ContinuousClock.now - started) after the job ran: by the 5 s re-read, not the event")
        }
        // No classic subscription anywhere: the waiter listens only where its queue lives.
        for master in masters {
            let plain = try node(master)
            defer { plain.close() }
            #expect(try await plain.send([RedisCommand("PUBSUB", "NUMPAT")])[0].int == 0)
        }
        #expect(waiter.listensForEvents)
    }

    /// slot → master, from `CLUSTER SLOTS`.
    func slotOwners(_ client: RedisClient) async throws -> @Sendable (Int) -> String? {
        let reply = try await client.execute("CLUSTER", "SLOTS")
        var ranges: [(ClosedRange<Int>, String)] = []
        for range in reply.array ?? [] {
            guard let items = range.array, let start = items[0].int, let end = items[1].int, let master = items[2].array,
                let host = master[0].string, let port = master[1].int else { continue }
            ranges.append((start...end, "\(host):\(port)"))
        }
        let owners = ranges
        return { slot in owners.first { $0.0.contains(slot) }?.1 }
    }
}
