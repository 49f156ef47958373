import JobFarmTesting
import RedisClient
import Testing

/// Queue names spread over a cluster's masters and commands sent to its replicas (what `bench queue --queues N` uses).
@Suite("Redis Cluster placement", .serialized)
struct ClusterPlacementTests {
    @Test(.enabled(if: TestRedis.clusterURL != nil, "needs JOBFARM_TEST_REDIS_CLUSTER_URL (scripts/test sets it)"))
    func spreadQueuesLandOnDistinctMastersAndRepliesComeFromEveryReplica() async throws {
        let client = RedisClient(configuration: try TestServer.cluster.configuration, name: "placement-test")
        defer { client.close() }
        let masters = try await client.masters()
        #expect(masters.count == 3)
        for count in 1...3 {
            let names = try await client.queuesSpreadOverMasters(count, prefix: "spread")
            #expect(names.count == count && names.first == "spread")
            var owners: [String] = []
            for name in names { owners.append(try #require(try await client.owner(ofSlot: ClusterSlot.of(name)))) }
            #expect(Set(owners).count == count, "\(names) on \(owners)")
        }
        // More queues than masters: every master once, then again in turn.
        let five = try await client.queuesSpreadOverMasters(5, prefix: "spread")
        var owners: [String] = []
        for name in five { owners.append(try #require(try await client.owner(ofSlot: ClusterSlot.of(name)))) }
        #expect(Set(owners.prefix(3)) == Set(masters) && Set(owners.suffix(2)).count == 2 && Set(five).count == 5)
        // One reply per replica (scripts/test's cluster has one replica per master), none from a master.
        let replicas = try await client.everyReplica(RedisCommand("ROLE"))
        #expect(replicas.count == 3)
        #expect(Set(replicas.map(\.node)).isDisjoint(with: masters))
        #expect(replicas.allSatisfy { $0.reply.array?.first?.string == "slave" })
    }

    @Test func oneServerHasNamesInOrderAndNoReplicas() async throws {
        let client = RedisClient(configuration: try TestRedis.configuration, name: "placement-test")
        defer { client.close() }
        #expect(try await client.queuesSpreadOverMasters(3, prefix: "spread") == ["spread", "spread-1", "spread-2"])
        #expect(try await client.everyReplica(RedisCommand("PING")).isEmpty)
    }
}
