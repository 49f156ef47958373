import Foundation
import JobProtocol
import JobQueue
import RedisClient

/// Reads what each pool must serve from Redis: the `stats` of the queues it serves (ready jobs and oldest age per
/// tier, in flight, the `enqueued`, `run_ms` and `run_count` counters), the scheduled jobs due now and soon (by tier:
/// those due within their tier's target wait), and the pool's live worker processes. Read only: it changes nothing.
///
/// A queue served by two pools counts in full for each (each pool could serve it alone).
public struct PoolSignalsReader: Sendable {
    let farm: JobFarm
    /// Most scheduled jobs per queue whose tier is read at each reading (the rest are counted in proportion).
    static let scheduledSample = 1000

    /// A reader of `farm`'s queues.
    public init(farm: JobFarm) {
        self.farm = farm
    }

    /// The signals of each pool (by name). `processes` overrides the count of live processes per pool (the
    /// supervisor knows its own); otherwise the registry's live workers of the pool are counted.
    public func read(_ pools: [PoolConfiguration], processes: [String: Int] = [:]) async throws -> [String: PoolSignals] {
        let tiers = farm.configuration.tiers
        var known: [String]?
        var queuesByPool: [String: [String]] = [:]
        for pool in pools {
            if let queues = pool.queues {
                queuesByPool[pool.name] = queues
            } else {
                if known == nil { known = try await farm.queues() }
                queuesByPool[pool.name] = known
            }
        }
        let allQueues = Array(Set(queuesByPool.values.flatMap { $0 })).sorted()
        let stats = allQueues.isEmpty ? [] : try await farm.stats(queues: allQueues)
        let statsByQueue = Dictionary(uniqueKeysWithValues: stats.map { ($0.queue, $0) })

        // Scheduled jobs due now and within the loosest target wait, by queue (one pipeline after the server's clock).
        let client = RedisClient(configuration: farm.configuration.redis, name: "autoscale")
        defer { client.close() }
        let time = try await client.execute(RedisCommand("TIME")).array ?? []
        let seconds = time.first?.string.flatMap(Double.init) ?? Date().timeIntervalSince1970
        let micros = time.count > 1 ? time[1].string.flatMap(Double.init) ?? 0 : 0
        let nowSeconds = seconds + micros / 1_000_000
        let nowMs = Int64(nowSeconds * 1000)
        let horizonMs = Int64((pools.flatMap { $0.autoscale.targetWaitSeconds.values }.max() ?? 60) * 1000)
        var due: [String: (now: Int, soon: Int)] = [:]
        // Their tiers: the first `Self.scheduledSample` of them by due time, each job's `tier` read from its record
        // (one pipeline); each counts for `(now + soon) / sampled` jobs.
        var sampled: [String: (weight: Double, jobs: [(tier: String, dueMs: Int64)])] = [:]
        if !allQueues.isEmpty {
            let replies = try await client.send(allQueues.flatMap { queue -> [RedisCommand] in
                let key = QueueKeys(namespace: farm.configuration.namespace, queue: queue).scheduled
                return [RedisCommand("ZCOUNT", key, "-inf", String(nowMs)),
                        RedisCommand("ZCOUNT", key, "(\(nowMs)", String(nowMs + horizonMs)),
                        RedisCommand("ZRANGEBYSCORE", key, "-inf", String(nowMs + horizonMs), "WITHSCORES", "LIMIT", "0", String(Self.scheduledSample))]
            })
            var lookups: [(queue: String, id: String, dueMs: Int64)] = []
            for (index, queue) in allQueues.enumerated() {
                due[queue] = (replies[3 * index].int ?? 0, replies[3 * index + 1].int ?? 0)
                let items = replies[3 * index + 2].array ?? []
                for pair in stride(from: 0, to: items.count - 1, by: 2) {
                    guard let id = items[pair].string, let score = items[pair + 1].string.flatMap(Double.init) else { continue }
                    lookups.append((queue, id, Int64(score)))
                }
            }
            let tierReplies = lookups.isEmpty ? [] : try await client.send(lookups.map {
                RedisCommand("HGET", QueueKeys(namespace: farm.configuration.namespace, queue: $0.queue).job($0.id), "tier")
            })
            for (lookup, reply) in zip(lookups, tierReplies) {
                // A record without a tier (or not a hash) counts with the loosest tier, as before per-tier figures.
                let tier = reply.string ?? tiers.last ?? "standard"
                sampled[lookup.queue, default: (1, [])].jobs.append((tier, lookup.dueMs))
            }
            for (queue, sample) in sampled where !sample.jobs.isEmpty {
                let total = (due[queue]?.now ?? 0) + (due[queue]?.soon ?? 0)
                sampled[queue]?.weight = max(1, Double(total) / Double(sample.jobs.count))
            }
        }
        var live: [String: Int] = [:]
        if pools.contains(where: { processes[$0.name] == nil }) {
            for worker in try await farm.workers() {
                guard let pool = worker.fields["pool"] ?? pools.first(where: { worker.id.hasPrefix("\($0.name)-") })?.name else { continue }
                live[pool, default: 0] += 1
            }
        }

        var result: [String: PoolSignals] = [:]
        for pool in pools {
            var signals = PoolSignals(atSeconds: nowSeconds, tiers: [], processes: processes[pool.name] ?? live[pool.name] ?? 0)
            var byTier: [String: PoolSignals.Tier] = [:]
            var scheduledByTier: [String: Double] = [:]
            for queue in queuesByPool[pool.name] ?? [] {
                guard let stat = statsByQueue[queue] else { continue }
                let served = pool.tiersByQueue[queue] ?? tiers
                if let sample = sampled[queue] {
                    // Due now, or within the tier's target wait: it joins the tier's line within that time.
                    for job in sample.jobs where served.contains(job.tier) {
                        if job.dueMs <= nowMs + Int64(pool.autoscale.targetWait(job.tier) * 1000) {
                            scheduledByTier[job.tier, default: 0] += sample.weight
                        }
                    }
                }
                for tier in stat.tiers where served.contains(tier.name) {
                    var line = byTier[tier.name] ?? PoolSignals.Tier(name: tier.name, ready: 0, oldestAgeSeconds: 0, scheduled: 0)
                    line.ready += tier.depth
                    if let age = tier.oldestAge {
                        line.oldestAgeSeconds = max(line.oldestAgeSeconds, Double(age.components.seconds) + Double(age.components.attoseconds) / 1e18)
                    }
                    byTier[tier.name] = line
                }
                signals.inFlight += stat.inflight
                signals.enqueued += stat.counters["enqueued"] ?? 0
                signals.runMilliseconds += stat.counters["run_ms"] ?? 0
                signals.runCount += stat.counters["run_count"] ?? 0
                signals.dueNow += due[queue]?.now ?? 0
                signals.retrying += due[queue]?.soon ?? 0
            }
            for (tier, count) in scheduledByTier { byTier[tier]?.scheduled = Int(count.rounded()) }
            signals.tiers = tiers.compactMap { byTier[$0] }
            result[pool.name] = signals
        }
        return result
    }
}
