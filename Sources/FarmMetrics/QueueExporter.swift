import Foundation
import JobProtocol
import JobQueue
import Prometheus

/// The farm's queue metrics, read from Redis at each scrape (`jobfarm exporter`): what one process reports for all
/// the queues, the way redis_exporter or Sidekiq's exporters do, so that any number of workers adds no series.
///
/// Counters mirror the scripts' lifetime counters (`jf:{<queue>}:stats`), so they are exact and survive exporter
/// restarts; gauges are the queues' state now. Every metric other components register in `registry` (the
/// autoscaler's `jobfarm_desired_workers`, through swift-metrics once `MetricsSystem` is bootstrapped with a
/// `PrometheusMetricsFactory` over it) is printed after them.
public struct QueueExporter: Sendable {
    public let farm: JobFarm
    /// Metrics of other components, printed after the queue metrics.
    public let registry: PrometheusCollectorRegistry
    /// A worker whose last heartbeat is older than this is not counted as live.
    public var liveWithin: Duration

    public init(farm: JobFarm, registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry(), liveWithin: Duration = .seconds(60)) {
        self.farm = farm
        self.registry = registry
        self.liveWithin = liveWithin
    }

    /// The scripts' counters exported, each as `jobfarm_queue_<name>_total` (the name, then its help).
    public static let counters: [(field: String, name: String, help: String)] = [
        ("enqueued", "jobfarm_queue_enqueued_total", "Jobs enqueued (created, idempotent repeats not counted), by queue."),
        ("succeeded", "jobfarm_queue_succeeded_total", "Jobs that succeeded, by queue."),
        ("retried", "jobfarm_queue_retried_total", "Failed attempts that were retried, by queue."),
        ("dead", "jobfarm_queue_dead_lettered_total", "Jobs moved to the dead letters (every reason), by queue."),
        ("cancelled", "jobfarm_queue_cancelled_total", "Jobs cancelled (not kept as dead letters), by queue."),
        ("reaped", "jobfarm_queue_reaped_total", "Expired leases put back in line by the reaper, by queue."),
        ("requeued", "jobfarm_queue_requeued_total", "Dead letters requeued, by queue."),
        ("malformed", "jobfarm_queue_malformed_total", "Queue entries and job records found malformed, by queue."),
    ]

    /// Every metric name the exporter itself writes (tests check the dashboard against them).
    public static var metricNames: [String] {
        counters.map(\.name) + [
            "jobfarm_queue_depth", "jobfarm_queue_oldest_age_seconds", "jobfarm_queue_in_flight", "jobfarm_queue_delayed",
            "jobfarm_queue_retrying", "jobfarm_queue_due", "jobfarm_queue_dead_letters", "jobfarm_queue_paused",
            "jobfarm_queue_live_workers", "jobfarm_live_workers", "jobfarm_exporter_redis_up", "jobfarm_queue_outcomes_total",
            "jobfarm_jobs_enqueued_total",
        ]
    }

    /// The Prometheus text exposition of every queue, then the registry's metrics. When Redis cannot be read, only
    /// `jobfarm_exporter_redis_up 0` and the registry's metrics (an alert rule can watch it).
    public func render() async -> String {
        var text = PrometheusText()
        do {
            let stats = try await farm.stats()
            let queues = stats.map(\.queue)
            let pauses = try await farm.pauses(queues: queues)
            let workers = try await farm.workers(seenWithin: liveWithin)
            for counter in Self.counters {
                text.family(counter.name, type: "counter", help: counter.help)
                for queue in stats { text.sample(counter.name, [("queue", queue.queue)], Double(queue.counters[counter.field] ?? 0)) }
            }
            let counts = try await farm.outcomeCounts(queues: queues)
            let enqueued = counts.filter { $0.outcome == "enqueued" }
            let outcomes = counts.filter { $0.outcome != "enqueued" }
            text.family("jobfarm_jobs_enqueued_total", type: "counter",
                        help: "Jobs enqueued (created, idempotent repeats not counted), by queue, tier and kind, from the enqueue scripts' counters.")
            for item in enqueued {
                text.sample("jobfarm_jobs_enqueued_total", [("queue", item.queue), ("tier", item.tier), ("kind", item.kind)], Double(item.count))
            }
            text.family("jobfarm_queue_outcomes_total", type: "counter",
                        help: "Attempts ended, by queue, tier, kind and outcome (succeeded, retried, dead_lettered), from the scripts' counters.")
            for item in outcomes {
                text.sample("jobfarm_queue_outcomes_total",
                            [("queue", item.queue), ("tier", item.tier), ("kind", item.kind), ("outcome", item.outcome)], Double(item.count))
            }
            text.family("jobfarm_queue_depth", type: "gauge", help: "Jobs waiting to run now, by queue and tier.")
            for queue in stats { for tier in queue.tiers { text.sample("jobfarm_queue_depth", [("queue", queue.queue), ("tier", tier.name)], Double(tier.depth)) } }
            text.family("jobfarm_queue_oldest_age_seconds", type: "gauge", help: "How long the oldest waiting job of a tier has waited (0 when none waits), by queue and tier.")
            for queue in stats {
                for tier in queue.tiers {
                    text.sample("jobfarm_queue_oldest_age_seconds", [("queue", queue.queue), ("tier", tier.name)], tier.oldestAge?.seconds ?? 0)
                }
            }
            let gauges: [(String, String, (QueueStats) -> Int)] = [
                ("jobfarm_queue_in_flight", "Jobs leased by workers (running or about to), by queue.", \.inflight),
                ("jobfarm_queue_delayed", "Jobs enqueued with a delay or run-at time, not yet due or not yet moved, by queue.", \.delayed),
                ("jobfarm_queue_retrying", "Jobs waiting for another attempt after a failure, by queue.", \.retrying),
                ("jobfarm_queue_due", "Delayed and retrying jobs whose time has come (the scheduler moves them within a second), by queue.", \.dueNow),
                ("jobfarm_queue_dead_letters", "Jobs in the dead letters now, by queue.", \.dead),
            ]
            for (name, help, value) in gauges {
                text.family(name, type: "gauge", help: help)
                for queue in stats { text.sample(name, [("queue", queue.queue)], Double(value(queue))) }
            }
            text.family("jobfarm_queue_paused", type: "gauge", help: "1 for a paused queue (tier *) or tier, by queue and tier.")
            for pause in pauses { text.sample("jobfarm_queue_paused", [("queue", pause.queue), ("tier", pause.tier ?? "*")], 1) }
            text.family("jobfarm_queue_live_workers", type: "gauge", help: "Live worker processes serving the queue (those serving every queue included), by queue.")
            for queue in stats { text.sample("jobfarm_queue_live_workers", [("queue", queue.queue)], Double(workers.filter { $0.serves(queue: queue.queue) }.count)) }
            text.family("jobfarm_live_workers", type: "gauge", help: "Live worker processes, by pool (none: started without --pool).")
            var byPool: [String: Int] = [:]
            for worker in workers { byPool[worker.pool ?? "none", default: 0] += 1 }
            for (pool, count) in byPool.sorted(by: { $0.key < $1.key }) { text.sample("jobfarm_live_workers", [("pool", pool)], Double(count)) }
            text.family("jobfarm_exporter_redis_up", type: "gauge", help: "1 when the exporter could read the queues from Redis at this scrape.")
            text.sample("jobfarm_exporter_redis_up", [], 1)
        } catch {
            text = PrometheusText()
            text.family("jobfarm_exporter_redis_up", type: "gauge", help: "1 when the exporter could read the queues from Redis at this scrape.")
            text.sample("jobfarm_exporter_redis_up", [], 0)
        }
        return text.text + registry.emitToString()
    }
}

/// Prometheus text exposition format 0.0.4, written by hand for values read elsewhere (counters as they are).
struct PrometheusText {
    var text = ""

    mutating func family(_ name: String, type: String, help: String) {
        text += "# HELP \(name) \(help.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n"))\n"
        text += "# TYPE \(name) \(type)\n"
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Self.escape($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " " + (value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)) + "\n"
    }

    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }
}
