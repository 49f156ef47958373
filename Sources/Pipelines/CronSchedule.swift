import Foundation
import JobProtocol
import Synchronization

/// A missed firing of a schedule (the farm was down at the time): dropped, or run once late.
public enum MissedRunPolicy: String, Sendable, Hashable, CaseIterable {
    /// Only a firing found within its grace period runs; older missed firings are dropped.
    case skip
    /// The latest missed firing runs once, however late; earlier ones are dropped.
    case catchUpOnce = "catch_up_once"
}

/// A cron expression in a time zone, with what to do about firings the farm missed.
public struct CronSchedule: Sendable {
    public var cron: CronExpression
    public var timeZone: TimeZone
    /// The zone's name as written (Foundation on Linux calls UTC "GMT").
    public var timeZoneName: String
    public var missed: MissedRunPolicy
    /// How late a firing may run and still count as on time (default 5 minutes).
    public var grace: Duration
    /// Where it was written, when it came from a file.
    public var location: SourceLocation?

    public init(cron: CronExpression, timeZone: TimeZone, missed: MissedRunPolicy = .skip, grace: Duration = .seconds(300), location: SourceLocation? = nil) {
        self.cron = cron
        self.timeZone = timeZone
        self.timeZoneName = timeZone.identifier == "GMT" ? "UTC" : timeZone.identifier
        self.missed = missed
        self.grace = grace
        self.location = location
    }

    /// The first firing strictly after `instant`.
    public func nextFiring(after instant: Date) -> Date? { cron.nextFiring(after: instant, in: timeZone) }

    /// What a scheduler does at `now`, given the scheduled time of the last firing that ran (nil: never fired, so
    /// nothing is owed). Due firings are those after `lastFired` and at or before `now`:
    /// - the latest due firing runs when it is within `grace` of `now`, whatever the policy;
    /// - with `catch_up_once` it runs however late (once: earlier missed firings are dropped);
    /// - with `skip` a late one is dropped too.
    /// `next` is the first firing after `now`. Pure: the engine calls it with the server's time, tests with any.
    public func decide(lastFired: Date?, now: Date) -> FiringDecision {
        let next = nextFiring(after: now)
        guard let lastFired else { return FiringDecision(fire: nil, dropped: 0, next: next) }
        var due: [Date] = []
        var cursor = lastFired
        var count = 0
        // Count at most 100,000 missed firings (ten weeks of a per-minute schedule); the latest one is what matters.
        while count < 100_000, let firing = nextFiring(after: cursor), firing <= now {
            due.append(firing)
            if due.count > 2 { due.removeFirst() }
            cursor = firing
            count += 1
        }
        guard let latest = due.last else { return FiringDecision(fire: nil, dropped: 0, next: next) }
        let lateness = now.timeIntervalSince(latest)
        let graceSeconds = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
        if lateness <= graceSeconds || missed == .catchUpOnce {
            return FiringDecision(fire: latest, dropped: count - 1, next: next)
        }
        return FiringDecision(fire: nil, dropped: count, next: next)
    }

    /// `decide` at the clock's current time.
    public func decide(lastFired: Date?, clock: some ScheduleClock) -> FiringDecision {
        decide(lastFired: lastFired, now: clock.now())
    }
}

/// The answer of `CronSchedule.decide`.
public struct FiringDecision: Sendable, Equatable {
    /// The scheduled time of the firing to run now (the run's `run.date` is taken from it), if any.
    public var fire: Date?
    /// Missed firings not run (at most 100,000 are counted).
    public var dropped: Int
    /// The first firing after now: where the next firing job is scheduled.
    public var next: Date?

    public init(fire: Date?, dropped: Int, next: Date?) {
        self.fire = fire
        self.dropped = dropped
        self.next = next
    }
}

/// Where a scheduler reads the time: the system clock in production, a hand-moved one in tests.
public protocol ScheduleClock: Sendable {
    func now() -> Date
    /// How long to wait in real time until the clock reads `date` (zero when it is past): what a firing job is
    /// delayed by. The default is the difference; a clock that runs faster than real time (tests) divides it.
    func realDelay(until date: Date) -> Duration
}

extension ScheduleClock {
    public func realDelay(until date: Date) -> Duration {
        let seconds = max(0, date.timeIntervalSince(now()))
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }
}

/// A clock that runs `speed` times faster than real time from `start` (and can jump): a test of a per-minute
/// schedule at speed 60 sees a firing every real second. `realDelay` divides by the speed.
public final class AcceleratedScheduleClock: ScheduleClock {
    private let origin: Date
    private let realStart = ContinuousClock.now
    private let speed: Double
    private let jumped = Mutex<TimeInterval>(0)

    /// A clock reading `start` now and running `speed` times as fast as real time.
    public init(start: Date, speed: Double) {
        origin = start
        self.speed = speed
    }

    public func now() -> Date {
        let elapsed = ContinuousClock.now - realStart
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return origin.addingTimeInterval(seconds * speed + jumped.withLock { $0 })
    }

    public func realDelay(until date: Date) -> Duration {
        let seconds = max(0, date.timeIntervalSince(now())) / speed
        return .milliseconds(Int64((seconds * 1000).rounded(.up)))
    }

    /// Moves the clock forward by `seconds` at once (the farm was down that long).
    public func jump(by seconds: TimeInterval) { jumped.withLock { $0 += seconds } }
}

/// The system's wall clock.
public struct SystemScheduleClock: ScheduleClock {
    public init() {}
    public func now() -> Date { Date() }
}

/// A clock that moves only when told (tests).
public final class ManualScheduleClock: ScheduleClock {
    private let current: Mutex<Date>

    /// A clock that reads `start` until moved.
    public init(_ start: Date) {
        current = Mutex(start)
    }

    public func now() -> Date { current.withLock { $0 } }

    /// Moves the clock to `date`.
    public func set(_ date: Date) { current.withLock { $0 = date } }

    /// Moves the clock forward.
    public func advance(by seconds: TimeInterval) { current.withLock { $0 = $0.addingTimeInterval(seconds) } }
}
