import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Logging
import RedisClient
import Testing
@testable import JobWorker

/// The maintenance loop against a real Redis with one queue's key broken by a foreign client.
@Suite("Maintenance", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct MaintenanceTests {
    /// A queue whose `scheduled` is not a ZSET: its steps fail on its data, which is remembered (logged once), not
    /// taken for a lost connection (no lease renewal before every pass), and the other queue's due job is promoted.
    @Test func aBrokenQueueIsSetApartAndTheOthersAreMaintained() async throws {
        let farm = try TestRedis.farm()
        let driver = RedisWorkerDriver(farm: farm)
        defer { driver.close() }
        let due = try await farm.enqueue(EnqueueRequest(kind: "echo", queue: "good", payload: .null, delay: .milliseconds(1)))
        let client = RedisClient(configuration: farm.configuration.redis)
        defer { client.close() }
        _ = try await client.execute("SET", QueueKeys(namespace: farm.configuration.namespace, queue: "bad").scheduled, "broken")
        try await Task.sleep(for: .milliseconds(20))
        var logger = Logger(label: "test.maintenance")
        logger.logLevel = .critical
        let loop = MaintenanceLoop(driver: driver, queues: ["bad", "good"], logger: logger, isStopping: { false })
        var state = loop.initialState()
        let first = await loop.step(&state)
        #expect(!first.failed, "a queue's broken key is not a lost connection")
        #expect(Set(state.backoff.faults.keys) == ["bad"])
        #expect(try await farm.status(id: due, queue: "good")?.state == .queued, "the other queue's due job was promoted")
        _ = try await client.execute("DEL", QueueKeys(namespace: farm.configuration.namespace, queue: "bad").scheduled)
        try await Task.sleep(for: farm.configuration.maintenanceInterval)  // the broken queue's first pause
        _ = await loop.step(&state)
        #expect(state.backoff.faults.isEmpty, "repaired: maintained again")
    }
}
