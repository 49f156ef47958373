import Foundation

/// A pool's autoscaling targets (`autoscale:` in `workers.yaml`): how long a job of each tier may wait, how fast the
/// policy may go up and how long it waits before going down.
public struct AutoscaleSettings: Sendable, Equatable {
    /// The longest wait, in seconds, a job of each tier should have before it starts (a tier not named: 60).
    public var targetWaitSeconds: [String: Double]
    /// After a scale-up, the next scale-up waits this long (new processes take a while to show in the signals).
    public var scaleUpCooldownSeconds: Double
    /// A scale-down goes only to the highest count recommended within this window (so a lull does not flap).
    public var scaleDownWindowSeconds: Double
    /// How often `jobfarm supervise` reads the signals and decides.
    public var intervalSeconds: Double
    /// The service time per job assumed until one has been measured (`run_ms / run_count`).
    public var serviceTimeSeconds: Double
    /// The share of a process's slots the policy plans to keep busy (headroom for bursts between decisions).
    public var targetUtilisation: Double
    /// The time constant of the arrival rate's moving average, in seconds (nil: three intervals). Short, because a
    /// burst also shows as backlog: a long memory of it would keep processes after the backlog is gone.
    public var arrivalSmoothingSeconds: Double?
    /// The time constant of the service time's moving average, in seconds (nil: twelve intervals).
    public var serviceSmoothingSeconds: Double?

    /// The defaults: premium ≤ 1 s, standard ≤ 10 s, free ≤ 60 s; up every 30 s at most; down after 300 s;
    /// decisions every 5 s.
    public init(
        targetWaitSeconds: [String: Double] = ["premium": 1, "standard": 10, "free": 60],
        scaleUpCooldownSeconds: Double = 30, scaleDownWindowSeconds: Double = 300, intervalSeconds: Double = 5,
        serviceTimeSeconds: Double = 1, targetUtilisation: Double = 0.8, arrivalSmoothingSeconds: Double? = nil,
        serviceSmoothingSeconds: Double? = nil
    ) {
        self.targetWaitSeconds = targetWaitSeconds
        self.scaleUpCooldownSeconds = scaleUpCooldownSeconds
        self.scaleDownWindowSeconds = scaleDownWindowSeconds
        self.intervalSeconds = intervalSeconds
        self.serviceTimeSeconds = serviceTimeSeconds
        self.targetUtilisation = targetUtilisation
        self.arrivalSmoothingSeconds = arrivalSmoothingSeconds
        self.serviceSmoothingSeconds = serviceSmoothingSeconds
    }

    /// The arrival rate's time constant in use.
    public var arrivalSmoothing: Double { arrivalSmoothingSeconds ?? 3 * intervalSeconds }
    /// The service time's time constant in use.
    public var serviceSmoothing: Double { serviceSmoothingSeconds ?? 12 * intervalSeconds }

    /// The target wait of `tier` in seconds.
    public func targetWait(_ tier: String) -> Double { targetWaitSeconds[tier] ?? 60 }
}

/// What one pool must serve, read at one moment: the inputs of `AutoscalePolicy`.
public struct PoolSignals: Sendable, Equatable {
    /// One tier's line.
    public struct Tier: Sendable, Equatable {
        /// The tier's name.
        public var name: String
        /// Jobs ready to run now.
        public var ready: Int
        /// How long the oldest ready job has waited, in seconds (0 when none).
        public var oldestAgeSeconds: Double
        /// Scheduled jobs of the tier (delayed or retrying) due now or within the tier's target wait: they join the
        /// tier's line within that time. Nil when the reading has no per-tier figures (then `dueNow` and
        /// `retrying` count with the loosest tier).
        public var scheduled: Int?

        /// A tier's line.
        public init(name: String, ready: Int, oldestAgeSeconds: Double, scheduled: Int? = nil) {
            self.name = name
            self.ready = ready
            self.oldestAgeSeconds = oldestAgeSeconds
            self.scheduled = scheduled
        }
    }

    /// When the signals were read, in seconds on the policy's clock (the Redis server's clock, or a simulated one).
    public var atSeconds: Double
    /// The tiers the pool serves, in priority order.
    public var tiers: [Tier]
    /// Scheduled jobs (delayed or retrying) whose time has come: the scheduler moves them to their tier next.
    public var dueNow: Int
    /// Scheduled jobs due within the loosest target wait (retries waiting out their back-off, delayed jobs soon due).
    public var retrying: Int
    /// Jobs running (leased) now.
    public var inFlight: Int
    /// The queues' lifetime `enqueued` counter (summed): its change over time is the arrival rate.
    public var enqueued: Int
    /// The queues' lifetime `run_ms` counter kept by `complete`.
    public var runMilliseconds: Int
    /// The queues' lifetime `run_count` counter kept by `complete`.
    public var runCount: Int
    /// The pool's processes running now.
    public var processes: Int

    /// Signals read at `atSeconds`.
    public init(
        atSeconds: Double, tiers: [Tier], dueNow: Int = 0, retrying: Int = 0, inFlight: Int = 0, enqueued: Int = 0,
        runMilliseconds: Int = 0, runCount: Int = 0, processes: Int = 0
    ) {
        self.atSeconds = atSeconds
        self.tiers = tiers
        self.dueNow = dueNow
        self.retrying = retrying
        self.inFlight = inFlight
        self.enqueued = enqueued
        self.runMilliseconds = runMilliseconds
        self.runCount = runCount
        self.processes = processes
    }

    /// Jobs ready in every tier.
    public var ready: Int { tiers.reduce(0) { $0 + $1.ready } }
}

/// Which signal set a decision.
public enum AutoscaleDriver: String, Sendable, Equatable, CaseIterable {
    /// Nothing to serve: the pool's `min`.
    case idle
    /// The measured arrival rate × service time (the slots a steady stream keeps busy).
    case arrivalRate = "arrival_rate"
    /// The jobs running now (more than the arrival rate accounts for).
    case inFlight = "in_flight"
    /// A tier's ready jobs (with those of the tiers above it) to drain within its target wait.
    case backlog
    /// A tier's oldest job already used more than half its target wait (or all of it): the backlog has less time.
    case oldestAge = "oldest_age"
    /// The recommendation was below `min`.
    case minimum
    /// The recommendation was above `max`.
    case maximum
    /// Higher was recommended, but the last scale-up was less than the cooldown ago.
    case scaleUpCooldown = "scale_up_cooldown"
    /// Lower was recommended, but a higher count was recommended within the stabilisation window.
    case scaleDownWindow = "scale_down_window"
}

/// One decision: the count to run and why.
public struct AutoscaleDecision: Sendable, Equatable {
    /// The processes to run now.
    public var desired: Int
    /// What the signals alone ask for, within min/max (before the cooldown and the window).
    public var recommended: Int
    /// What the signals ask for before min/max.
    public var wanted: Int
    /// The signal that set `desired`.
    public var driver: AutoscaleDriver
    /// The tier behind a `backlog` or `oldest_age` decision (also kept when min, max, the cooldown or the window
    /// overrode it).
    public var tier: String?
    /// The service time per job used, in seconds.
    public var serviceSeconds: Double
    /// The arrival rate used, in jobs per second.
    public var arrivalPerSecond: Double
    /// Per tier, how long a job arriving now would wait with the processes running now: the ready jobs of the tier
    /// and the tiers above it × service time ÷ the running slots.
    public var backlogSeconds: [String: Double]
    /// One line for people: the driver and its figures.
    public var reason: String
}

/// The autoscaling policy: signals in, a process count and its reason out. Pure (no clock of its own, no I/O): the
/// signals carry their time, so `autoscale --once`, the supervisor, the metrics and the simulator all run this code.
public struct AutoscalePolicy: Sendable {
    /// What the policy remembers between decisions.
    public struct State: Sendable, Equatable {
        /// The count it last decided (nil before the first decision: the running processes count).
        public var current: Int?
        /// When it last scaled up.
        public var lastScaleUpSeconds: Double?
        /// The recommendations within the stabilisation window: (time, count).
        public var recommendations: [Recommendation] = []
        /// The previous signals (for the rates).
        public var previous: PoolSignals?
        /// The smoothed arrival rate (jobs/s), once two readings have been seen.
        public var arrivalPerSecond: Double?
        /// The smoothed service time (s), once a job has been timed.
        public var serviceSeconds: Double?

        /// A policy that has seen nothing yet.
        public init() {}
    }

    /// One past recommendation.
    public struct Recommendation: Sendable, Equatable {
        /// When, in seconds on the policy's clock.
        public var atSeconds: Double
        /// The count recommended.
        public var count: Int
    }

    /// The targets.
    public var settings: AutoscaleSettings
    /// Fewest processes.
    public var minProcesses: Int
    /// Most processes.
    public var maxProcesses: Int
    /// Jobs one process runs at once.
    public var concurrency: Int

    /// A policy for a pool of processes running `concurrency` jobs each, `minProcesses…maxProcesses` of them.
    public init(settings: AutoscaleSettings, minProcesses: Int, maxProcesses: Int, concurrency: Int) {
        self.settings = settings
        self.minProcesses = max(0, minProcesses)
        self.maxProcesses = max(self.minProcesses, maxProcesses)
        self.concurrency = max(1, concurrency)
    }

    /// The policy of a pool of `workers.yaml`.
    public init(pool: PoolConfiguration) {
        self.init(settings: pool.autoscale, minProcesses: pool.minProcesses, maxProcesses: pool.maxProcesses, concurrency: pool.concurrency)
    }

    /// Decides the process count for `signals`, updating `state`.
    public func decide(_ signals: PoolSignals, state: inout State) -> AutoscaleDecision {
        let now = signals.atSeconds
        updateRates(signals, state: &state)
        let service = state.serviceSeconds ?? settings.serviceTimeSeconds
        let arrival = state.arrivalPerSecond ?? 0
        let slotsPerProcess = Double(concurrency) * min(1, max(0.05, settings.targetUtilisation))

        // The slots a steady stream keeps busy, and what is running now.
        let streamSlots = arrival * service
        let steadySlots = max(streamSlots, Double(signals.inFlight))
        var wantedSlots = steadySlots
        var driver: AutoscaleDriver = streamSlots >= Double(signals.inFlight) ? .arrivalRate : .inFlight
        var driverTier: String?
        var detail = streamSlots >= Double(signals.inFlight)
            ? String(format: "%.2f jobs/s × %.3f s", arrival, service)
            : "\(signals.inFlight) running"

        // Each tier: its ready jobs and those of the tiers above it drained within what is left of its target wait.
        // Scheduled jobs (due now, retrying) count with their tier when the reading has per-tier figures (those due
        // within the tier's target wait), else all of them with the loosest target.
        var cumulative = 0
        var cumulativeScheduled = 0
        let tiered = signals.tiers.contains { $0.scheduled != nil }
        let runningSlots = Double(max(1, signals.processes) * concurrency)
        var backlogSeconds: [String: Double] = [:]
        for (index, tier) in signals.tiers.enumerated() {
            cumulative += tier.ready
            cumulativeScheduled += tier.scheduled ?? 0
            let untiered = !tiered && index == signals.tiers.count - 1 ? signals.dueNow + signals.retrying : 0
            let waiting = cumulative + cumulativeScheduled + untiered
            backlogSeconds[tier.name] = Double(cumulative) * service / runningSlots
            guard waiting > 0 else { continue }
            let target = settings.targetWait(tier.name)
            let budget = max(target - (tier.ready > 0 ? tier.oldestAgeSeconds : 0), target / 4)
            let slots = steadySlots + Double(waiting) * service / budget
            if slots > wantedSlots + 1e-9 {
                wantedSlots = slots
                driverTier = tier.name
                // The age names the decision once it took more than half the target.
                if budget < target / 2 {
                    driver = .oldestAge
                    detail = String(format: "%@: %d waiting, oldest %.1f s of a %.1f s target", tier.name, waiting, tier.oldestAgeSeconds, target)
                } else {
                    driver = .backlog
                    detail = String(format: "%@: %d waiting × %.3f s within %.1f s", tier.name, waiting, service, target)
                }
            }
        }
        if signals.tiers.isEmpty && signals.dueNow + signals.retrying > 0 {
            let slots = steadySlots + Double(signals.dueNow + signals.retrying) * service / settings.targetWait("")
            if slots > wantedSlots { wantedSlots = slots; driver = .backlog; detail = "\(signals.dueNow + signals.retrying) scheduled" }
        }
        let wanted = wantedSlots <= 1e-9 ? 0 : Int((wantedSlots / slotsPerProcess - 1e-9).rounded(.up))
        if wanted == 0 { driver = .idle; detail = "nothing to serve" }
        var recommended = min(max(wanted, minProcesses), maxProcesses)
        if recommended != wanted {
            detail += "; wants \(wanted), " + (wanted < minProcesses ? "min \(minProcesses)" : "max \(maxProcesses)")
            driver = wanted < minProcesses ? .minimum : .maximum
        }
        recommended = max(0, recommended)

        // Cooldown up, stabilisation window down.
        let current = state.current ?? min(max(signals.processes, minProcesses), maxProcesses)
        state.recommendations.append(Recommendation(atSeconds: now, count: recommended))
        state.recommendations.removeAll { $0.atSeconds < now - settings.scaleDownWindowSeconds }
        var desired = recommended
        if recommended > current {
            if let last = state.lastScaleUpSeconds, now - last < settings.scaleUpCooldownSeconds {
                desired = current
                detail = String(format: "recommends %d (%@: %@); last scale-up %.1f s ago, cooldown %.1f s",
                                recommended, driver.rawValue, detail, now - last, settings.scaleUpCooldownSeconds)
                driver = .scaleUpCooldown
            } else {
                state.lastScaleUpSeconds = now
            }
        } else if recommended < current {
            let highest = state.recommendations.map(\.count).max() ?? recommended
            desired = min(current, max(recommended, highest))
            if desired > recommended {
                detail = String(format: "recommends %d (%@: %@); %d was recommended within the %.0f s window",
                                recommended, driver.rawValue, detail, highest, settings.scaleDownWindowSeconds)
                driver = .scaleDownWindow
            }
        }
        state.current = desired
        return AutoscaleDecision(
            desired: desired, recommended: recommended, wanted: wanted, driver: driver, tier: driverTier,
            serviceSeconds: service, arrivalPerSecond: arrival, backlogSeconds: backlogSeconds,
            reason: "\(driver.rawValue): \(detail)")
    }

    /// Takes in a reading without deciding (the rates need two readings: `autoscale --once` reads twice).
    public func observe(_ signals: PoolSignals, state: inout State) {
        updateRates(signals, state: &state)
    }

    /// Folds the counters' changes since the previous signals into the moving averages.
    func updateRates(_ signals: PoolSignals, state: inout State) {
        defer { state.previous = signals }
        if state.serviceSeconds == nil, signals.runCount > 0 {
            // Before any change is seen: the lifetime mean.
            state.serviceSeconds = Double(signals.runMilliseconds) / 1000 / Double(signals.runCount)
        }
        guard let previous = state.previous else { return }
        let elapsed = signals.atSeconds - previous.atSeconds
        guard elapsed > 0 else { return }
        let arrived = signals.enqueued - previous.enqueued
        if arrived >= 0 {
            let rate = Double(arrived) / elapsed
            let weight = 1 - exp(-elapsed / max(0.001, settings.arrivalSmoothing))
            state.arrivalPerSecond = state.arrivalPerSecond.map { $0 + weight * (rate - $0) } ?? rate
        }
        let timed = signals.runCount - previous.runCount
        let milliseconds = signals.runMilliseconds - previous.runMilliseconds
        if timed > 0 && milliseconds >= 0 {
            let sample = Double(milliseconds) / 1000 / Double(timed)
            let weight = 1 - exp(-elapsed / max(0.001, settings.serviceSmoothing))
            state.serviceSeconds = state.serviceSeconds.map { $0 + weight * (sample - $0) } ?? sample
        }
    }
}
