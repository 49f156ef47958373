import Foundation
import JobQueue
import Prometheus
import Synchronization

/// One pool's decision with the signals it was made from.
public struct PoolScaling: Sendable, Equatable {
    /// The pool.
    public var pool: String
    /// What it was decided from.
    public var signals: PoolSignals
    /// The decision.
    public var decision: AutoscaleDecision

    /// A JSON object for `jobfarm autoscale --once --json`.
    public var json: [String: Any] {
        var object: [String: Any] = [
            "pool": pool, "desired": decision.desired, "recommended": decision.recommended, "wanted": decision.wanted,
            "driver": decision.driver.rawValue, "reason": decision.reason, "processes": signals.processes,
            "service_time_seconds": decision.serviceSeconds, "arrivals_per_second": decision.arrivalPerSecond,
            "in_flight": signals.inFlight, "due_now": signals.dueNow, "retrying": signals.retrying,
            "tiers": signals.tiers.map { tier -> [String: Any] in
                ["tier": tier.name, "ready": tier.ready, "oldest_age_seconds": tier.oldestAgeSeconds,
                 "backlog_seconds": decision.backlogSeconds[tier.name] ?? 0]
            },
        ]
        if let tier = decision.tier { object["tier"] = tier }
        return object
    }
}

/// Reads the signals of every autoscaled pool and runs each pool's `AutoscalePolicy`, keeping the policies' state
/// between steps: what `jobfarm supervise` runs every `autoscale.interval`, and `jobfarm autoscale --once` once.
public final class PoolAutoscaler: Sendable {
    let pools: [PoolConfiguration]
    let reader: PoolSignalsReader
    let gauges: AutoscaleGauges?
    private let states = Mutex<[String: AutoscalePolicy.State]>([:])

    /// An autoscaler of `pools` (every pool of the file; a pool whose `min` equals its `max` is decided too, it
    /// just cannot move) on `farm`'s queues; with `gauges`, every decision is recorded there.
    public init(pools: [PoolConfiguration], farm: JobFarm, gauges: AutoscaleGauges? = nil) {
        self.pools = pools
        self.reader = PoolSignalsReader(farm: farm)
        self.gauges = gauges
    }

    /// Reads once without deciding (so that the next step has rates to work with).
    public func observe(processes: [String: Int] = [:]) async throws {
        let signals = try await reader.read(pools, processes: processes)
        states.withLock { states in
            for pool in pools {
                guard let reading = signals[pool.name] else { continue }
                AutoscalePolicy(pool: pool).observe(reading, state: &states[pool.name, default: AutoscalePolicy.State()])
            }
        }
    }

    /// Reads the signals and decides each pool's count. `processes`: what each pool runs now, when the caller knows.
    public func step(processes: [String: Int] = [:]) async throws -> [PoolScaling] {
        let signals = try await reader.read(pools, processes: processes)
        let result = states.withLock { states in
            pools.compactMap { pool -> PoolScaling? in
                guard let reading = signals[pool.name] else { return nil }
                let decision = AutoscalePolicy(pool: pool).decide(reading, state: &states[pool.name, default: AutoscalePolicy.State()])
                return PoolScaling(pool: pool.name, signals: reading, decision: decision)
            }
        }
        if let gauges { for scaling in result { gauges.record(scaling) } }
        return result
    }
}

/// The autoscaler's figures as Prometheus gauges, in any `PrometheusCollectorRegistry` (the supervisor's
/// `--metrics-port`, or an exporter's registry): what an HPA (external metric) or KEDA scale a pool on.
///
/// - `jobfarm_desired_workers{pool}`: the processes the policy decided (after cooldown and window);
/// - `jobfarm_recommended_workers{pool}`: what the signals alone ask for, within min/max;
/// - `jobfarm_backlog_seconds{pool,tier}`: how long a job of the tier arriving now would wait with the processes
///   running now (the tier's and higher tiers' ready jobs × service time ÷ running slots);
/// - `jobfarm_autoscale_service_time_seconds{pool}`, `jobfarm_autoscale_arrival_rate{pool}` (jobs/s),
///   `jobfarm_autoscale_driver{pool,driver}` (1 for the signal that set the count, else 0).
public struct AutoscaleGauges: Sendable {
    /// Where the gauges live.
    public let registry: PrometheusCollectorRegistry

    /// Gauges in `registry`.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    func gauge(_ name: String, _ help: String, _ labels: [(String, String)]) -> Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    /// Records one pool's decision.
    public func record(_ scaling: PoolScaling) {
        let pool = [("pool", scaling.pool)]
        let decision = scaling.decision
        gauge("jobfarm_desired_workers", "Worker processes the autoscaler decided for the pool.", pool).set(to: Double(decision.desired))
        gauge("jobfarm_recommended_workers", "Worker processes the signals alone ask for (within min and max), before cooldown and stabilisation.", pool)
            .set(to: Double(decision.recommended))
        for tier in scaling.signals.tiers {
            gauge("jobfarm_backlog_seconds", "Seconds a job of the tier arriving now would wait with the running processes (its and higher tiers' ready jobs × service time ÷ running slots).",
                  pool + [("tier", tier.name)]).set(to: decision.backlogSeconds[tier.name] ?? 0)
        }
        gauge("jobfarm_autoscale_service_time_seconds", "Observed service time per job (moving average of run_ms / run_count).", pool)
            .set(to: decision.serviceSeconds)
        gauge("jobfarm_autoscale_arrival_rate", "Observed arrivals per second (moving average of the enqueued counter's change).", pool)
            .set(to: decision.arrivalPerSecond)
        for driver in AutoscaleDriver.allCases {
            gauge("jobfarm_autoscale_driver", "1 for the signal that set the pool's desired count, else 0.", pool + [("driver", driver.rawValue)])
                .set(to: Double(driver == decision.driver ? 1 : 0))
        }
    }

    /// The Prometheus text exposition of the registry.
    public func exposition() -> String {
        String(decoding: registry.emitToBuffer(), as: UTF8.self)
    }
}
