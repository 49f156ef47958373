import Foundation
import Testing
import WorkerPools

/// The autoscaling policy as a pure function: each signal driving, the bounds, the cooldown and the window, with
/// the time carried by the signals (an injected clock).
@Suite("Autoscale policy")
struct AutoscalePolicyTests {
    static let tiers = ["premium", "standard", "free"]

    func signals(
        at: Double, ready: [Int] = [0, 0, 0], oldest: [Double] = [0, 0, 0], inFlight: Int = 0, enqueued: Int = 0,
        runMs: Int = 0, runCount: Int = 0, processes: Int = 2, dueNow: Int = 0, retrying: Int = 0
    ) -> PoolSignals {
        PoolSignals(
            atSeconds: at, tiers: zip(Self.tiers, zip(ready, oldest)).map { PoolSignals.Tier(name: $0, ready: $1.0, oldestAgeSeconds: $1.1) },
            dueNow: dueNow, retrying: retrying, inFlight: inFlight, enqueued: enqueued, runMilliseconds: runMs, runCount: runCount,
            processes: processes)
    }

    func policy(min: Int = 2, max: Int = 10, concurrency: Int = 10, cooldown: Double = 30, window: Double = 300, service: Double = 1,
                utilisation: Double = 1) -> AutoscalePolicy {
        AutoscalePolicy(
            settings: AutoscaleSettings(scaleUpCooldownSeconds: cooldown, scaleDownWindowSeconds: window, serviceTimeSeconds: service,
                                        targetUtilisation: utilisation),
            minProcesses: min, maxProcesses: max, concurrency: concurrency)
    }

    @Test func nothingToServeKeepsTheMinimum() {
        var state = AutoscalePolicy.State()
        let decision = policy().decide(signals(at: 0), state: &state)
        #expect(decision.desired == 2)
        #expect(decision.wanted == 0)
        #expect(decision.driver == .minimum)
    }

    @Test func aStandardBacklogIsDrainedWithinItsTargetWait() {
        // 300 standard jobs × 1 s within 10 s = 30 slots = 3 processes of 10.
        var state = AutoscalePolicy.State()
        let decision = policy().decide(signals(at: 0, ready: [0, 300, 0]), state: &state)
        #expect(decision.desired == 3)
        #expect(decision.driver == .backlog)
        #expect(decision.tier == "standard")
        #expect(decision.reason.contains("standard"))
    }

    @Test func premiumHasTheTightestTarget() {
        // 40 premium jobs within 1 s = 40 slots; the same 40 as free jobs (60 s) need less than one slot.
        var premium = AutoscalePolicy.State()
        #expect(policy().decide(signals(at: 0, ready: [40, 0, 0]), state: &premium).desired == 4)
        var free = AutoscalePolicy.State()
        let decision = policy().decide(signals(at: 0, ready: [0, 0, 40]), state: &free)
        #expect(decision.desired == 2 && decision.driver == .minimum && decision.wanted == 1)
    }

    @Test func theOldestJobsAgeShortensTheTime() {
        // 100 free jobs: within 60 s that is 2 slots; with the oldest already 55 s old, 15 s are left (a quarter
        // of the target at least): 100 / 15 ≈ 6.7 slots.
        var fresh = AutoscalePolicy.State()
        let young = policy(min: 0, concurrency: 1).decide(signals(at: 0, ready: [0, 0, 100], oldest: [0, 0, 1]), state: &fresh)
        #expect(young.desired == 2 && young.driver == .backlog)
        var late = AutoscalePolicy.State()
        let old = policy(min: 0, concurrency: 1).decide(signals(at: 0, ready: [0, 0, 100], oldest: [0, 0, 55]), state: &late)
        #expect(old.desired == 7)
        #expect(old.driver == .oldestAge && old.tier == "free")
        #expect(old.reason.contains("oldest 55.0 s"))
    }

    @Test func theArrivalRateAndTheMeasuredServiceTimeDrive() {
        // 50 jobs/s arriving, each taking 0.4 s as measured by run_ms / run_count: 20 busy slots = 2 processes
        // of 10; then a service time of 1.2 s: 60 slots.
        let policy = policy(min: 1, max: 20, cooldown: 0, window: 0)
        var state = AutoscalePolicy.State()
        policy.observe(signals(at: 0, enqueued: 1000, runMs: 0, runCount: 0), state: &state)
        let first = policy.decide(signals(at: 10, enqueued: 1500, runMs: 200_000, runCount: 500), state: &state)
        #expect(abs(first.arrivalPerSecond - 50) < 1e-9)
        #expect(abs(first.serviceSeconds - 0.4) < 1e-9)
        #expect(first.desired == 2 && first.driver == .arrivalRate)
        // The service time is a moving average: a long run of 1.2 s jobs brings it there.
        var decision = first
        for step in 1...40 {
            let at = 10 + Double(step) * 10
            decision = policy.decide(signals(at: at, enqueued: 1500 + 500 * step, runMs: 200_000 + 600_000 * step, runCount: 500 + 500 * step), state: &state)
        }
        #expect(abs(decision.serviceSeconds - 1.2) < 0.01)
        #expect(decision.desired == 6)
    }

    @Test func jobsInFlightKeepTheirProcesses() {
        var state = AutoscalePolicy.State()
        let decision = policy(min: 1).decide(signals(at: 0, inFlight: 45, processes: 5), state: &state)
        #expect(decision.desired == 5 && decision.driver == .inFlight)
    }

    @Test func scheduledJobsDueNowAndRetryingCountWithTheLoosestTarget() {
        var state = AutoscalePolicy.State()
        let decision = policy(min: 0, concurrency: 1).decide(signals(at: 0, dueNow: 120, retrying: 60), state: &state)
        // 180 jobs × 1 s within 60 s (free) = 3 slots.
        #expect(decision.desired == 3 && decision.driver == .backlog && decision.tier == "free")
    }

    @Test func boundedByMax() {
        var state = AutoscalePolicy.State()
        let decision = policy(max: 6).decide(signals(at: 0, ready: [1000, 0, 0]), state: &state)
        #expect(decision.desired == 6 && decision.wanted == 100)
        #expect(decision.driver == .maximum)
        #expect(decision.reason.contains("max 6"))
    }

    @Test func theUtilisationTargetLeavesHeadroom() {
        var full = AutoscalePolicy.State()
        #expect(policy(min: 0, utilisation: 1).decide(signals(at: 0, inFlight: 40), state: &full).desired == 4)
        var headroom = AutoscalePolicy.State()
        #expect(policy(min: 0, utilisation: 0.8).decide(signals(at: 0, inFlight: 40), state: &headroom).desired == 5)
    }

    @Test func scaleUpWaitsForTheCooldown() {
        let policy = policy(max: 20, cooldown: 30, window: 0)
        var state = AutoscalePolicy.State()
        // The first scale-up goes at once.
        #expect(policy.decide(signals(at: 100, ready: [0, 500, 0]), state: &state).desired == 5)
        // Twice the backlog 10 s later: held by the cooldown.
        let held = policy.decide(signals(at: 110, ready: [0, 1000, 0], processes: 5), state: &state)
        #expect(held.desired == 5 && held.recommended == 10)
        #expect(held.driver == .scaleUpCooldown)
        #expect(held.reason.contains("cooldown"))
        // After it: up.
        let later = policy.decide(signals(at: 130, ready: [0, 1000, 0], processes: 5), state: &state)
        #expect(later.desired == 10 && later.driver == .backlog)
    }

    @Test func scaleDownWaitsForTheStabilisationWindow() {
        let policy = policy(max: 20, cooldown: 0, window: 60)
        var state = AutoscalePolicy.State()
        #expect(policy.decide(signals(at: 0, ready: [0, 800, 0]), state: &state).desired == 8)
        // Drained: the window still holds 8.
        for at in stride(from: 10.0, through: 55, by: 15) {
            let held = policy.decide(signals(at: at, processes: 8), state: &state)
            #expect(held.desired == 8, "at \(at)")
            #expect(held.driver == .scaleDownWindow)
        }
        // A little backlog at 58 s recommends 3; once 8 left the window (after 60 s), the highest left is 3…
        _ = policy.decide(signals(at: 58, ready: [0, 300, 0], processes: 8), state: &state)
        let partly = policy.decide(signals(at: 61, processes: 8), state: &state)
        #expect(partly.desired == 3 && partly.driver == .scaleDownWindow)
        // …and once that left too, the minimum.
        let down = policy.decide(signals(at: 119, processes: 3), state: &state)
        #expect(down.desired == 2 && down.driver == .minimum)
    }

    @Test func noFlappingOnANoisyLoad() {
        // Arrivals alternate between 0 and 100 jobs per 5 s: the count goes up once and stays.
        let policy = policy(min: 1, max: 20, cooldown: 30, window: 120)
        var state = AutoscalePolicy.State()
        var counts: [Int] = []
        for step in 0..<48 {
            let ready = step % 2 == 0 ? [0, 0, 0] : [0, 200, 0]
            counts.append(policy.decide(signals(at: Double(step) * 5, ready: ready, processes: counts.last ?? 1), state: &state).desired)
        }
        let changes = zip(counts, counts.dropFirst()).filter { $0 != $1 }.count
        #expect(changes <= 1, "\(counts)")
    }

    @Test func countersThatWentBackAreIgnored() {
        // Redis flushed: enqueued and run_count restart from 0; no negative rate, no nonsense service time.
        let policy = policy(min: 0)
        var state = AutoscalePolicy.State()
        policy.observe(signals(at: 0, enqueued: 5000, runMs: 50_000, runCount: 100), state: &state)
        let decision = policy.decide(signals(at: 5, enqueued: 10, runMs: 10, runCount: 1), state: &state)
        #expect(decision.arrivalPerSecond == 0)
        #expect(abs(decision.serviceSeconds - 0.5) < 1e-9, "the lifetime mean read first")
    }
}

/// `autoscale:` and the process bounds in workers.yaml.
@Suite("workers.yaml autoscale keys")
struct AutoscaleConfigurationTests {
    @Test func defaultsAreTwoToTenAndTheMLPoolsMaxComesFromTheCores() throws {
        let pools = try PoolsConfiguration.parse("""
            pools:
              - name: general
                queues: default
              - name: ml
                queues: ml
                concurrency: 1
                blas_threads: 1
                compute_threads: 1
            """, cores: 6)
        let general = try pools.pool(named: "general")
        #expect(general.minProcesses == 2 && general.maxProcesses == 10 && general.isAutoscaled)
        #expect(general.autoscale == AutoscaleSettings())
        #expect(general.autoscale.targetWait("premium") == 1 && general.autoscale.targetWait("standard") == 10
                && general.autoscale.targetWait("free") == 60)
        let ml = try pools.pool(named: "ml")
        #expect(ml.maxProcesses == 6 && ml.minProcesses == 2)
        // Two cores: one ML process of 2 threads fits; min follows.
        let small = try PoolsConfiguration.parse("pools:\n  - name: ml\n    queues: ml\n    concurrency: 4\n    blas_threads: 1\n", cores: 2)
        #expect(small.pools[0].minProcesses == 1 && small.pools[0].maxProcesses == 1 && !small.pools[0].isAutoscaled)
    }

    @Test func everyAutoscaleKeyIsRead() throws {
        let pools = try PoolsConfiguration.parse("""
            pools:
              - name: general
                queues: default
                processes: {min: 1, max: 8}
                autoscale:
                  target_wait: {premium: 0.5, free: 120}
                  scale_up_cooldown: 15
                  scale_down_window: 120
                  interval: 2
                  service_time: 0.25
                  target_utilisation: 0.7
            """, cores: 2)
        let settings = pools.pools[0].autoscale
        #expect(settings.targetWaitSeconds == ["premium": 0.5, "standard": 10, "free": 120])
        #expect(settings.scaleUpCooldownSeconds == 15 && settings.scaleDownWindowSeconds == 120)
        #expect(settings.intervalSeconds == 2 && settings.serviceTimeSeconds == 0.25 && settings.targetUtilisation == 0.7)
        #expect(pools.pools[0].minProcesses == 1 && pools.pools[0].maxProcesses == 8)
    }

    func error(_ text: String) -> PoolsConfigurationError? {
        do {
            _ = try PoolsConfiguration.parse(text, path: "w.yaml", cores: 2)
            return nil
        } catch {
            return error as? PoolsConfigurationError
        }
    }

    @Test func mistakesNameTheFileLineAndKey() {
        let unknown = error("pools:\n  - name: g\n    autoscale:\n      cooldown: 5\n")
        #expect(unknown?.line == 4 && unknown?.key == "pools[0].autoscale.cooldown")
        #expect(unknown?.description.contains("w.yaml:4: pools[0].autoscale.cooldown is not a known key; allowed here: target_wait, scale_up_cooldown") == true, "\(String(describing: unknown))")
        let tier = error("pools:\n  - name: g\n    autoscale:\n      target_wait:\n        gold: 1\n")
        #expect(tier?.line == 5 && tier?.key == "pools[0].autoscale.target_wait.gold")
        #expect(tier?.message.contains("premium, standard, free") == true)
        let zero = error("pools:\n  - name: g\n    autoscale:\n      target_wait: {premium: 0}\n")
        #expect(zero?.key == "pools[0].autoscale.target_wait.premium" && zero?.message.contains("above 0") == true)
        let share = error("pools:\n  - name: g\n    autoscale:\n      target_utilisation: 1.5\n")
        #expect(share?.line == 4 && share?.message.contains("0.05 to 1") == true)
        let negative = error("pools:\n  - name: g\n    autoscale:\n      scale_down_window: -1\n")
        #expect(negative?.key == "pools[0].autoscale.scale_down_window" && negative?.message.contains("≥ 0") == true)
        let notMapping = error("pools:\n  - name: g\n    autoscale: fast\n")
        #expect(notMapping?.line == 3 && notMapping?.message.contains("must be a mapping") == true)
    }
}
