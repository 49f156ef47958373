import JobProtocol
import RedisClient

/// Waiting for work on a Redis Cluster (docs/PROTOCOL.md §7, "On a Redis Cluster"): every queue is its own hash slot,
/// so one `BLPOP` cannot name the wake-up lists of several queues. Each served queue blocks on a connection of its
/// own (its `BLPOP`, its `fetch` behind it, one slot), and the first queue that wakes ends the others' waits
/// (`CLIENT UNBLOCK`), so one wake-up still fetches from every queue, as on one server.
extension JobFarm {
    /// `awaitAndFetchEach` on a cluster for several queues: one pipeline `[BLPOP <the queue's lists>, fetch]` per
    /// queue, run by `RedisClient.firstOf`. The replies keep the queues' order (the order of `--queues`).
    func awaitAndFetchEachOnCluster(
        queues: [String], count: Int, worker: String, tiers: [String: [String]], timeout: Duration, on client: RedisClient
    ) async throws -> (wait: String?, fetched: [(queue: String, result: Result<[LeasedJob], JobFarmError>)]) {
        let share = max(1, count / max(1, queues.count))
        let groups: [[RedisRequest]] = queues.map { queue in
            [.command(wakeUpWait(queues: [queue], tiers: tiers, timeout: timeout)),
             fetchRequest(queue: queue, count: share, worker: worker, tiers: tiers[queue])]
        }
        let replies = try await client.firstOf(groups, blockingFor: timeout)
        var fetched: [(queue: String, result: Result<[LeasedJob], JobFarmError>)] = []
        var wait: String?
        for (queue, reply) in zip(queues, replies) {
            if wait == nil, let message = reply.first?.errorMessage, !message.hasPrefix("UNBLOCKED") { wait = message }
            do {
                fetched.append((queue, .success(try await refusingInvalidText(try leasedJobs(from: reply.last ?? .null, queue: queue), on: client))))
            } catch let error as JobFarmError {
                fetched.append((queue, .failure(error)))
            } catch let error as RedisError {
                fetched.append((queue, .failure(JobFarmError(error, operation: "fetch"))))
            }
        }
        return (wait, fetched)
    }
}
