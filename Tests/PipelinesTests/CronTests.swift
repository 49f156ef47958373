import Foundation
import Pipelines
import Testing

func utc(_ text: String) -> Date {
    let formatter = ISO8601DateFormatter()
    return formatter.date(from: text)!
}

func iso(_ date: Date) -> String {
    ISO8601DateFormatter().string(from: date)
}

@Suite("Cron schedules")
struct CronTests {
    let berlin = TimeZone(identifier: "Europe/Berlin")!
    let newYork = TimeZone(identifier: "America/New_York")!
    let zulu = TimeZone(identifier: "UTC")!

    func next(_ expression: String, after: String, zone: TimeZone, count: Int) throws -> [String] {
        try CronExpression(parsing: expression).firings(after: utc(after), in: zone, count: count).map(iso)
    }

    @Test func theTimeZoneDatabaseIsThere() {
        #expect(CronExpression.timeZone(named: "Europe/Berlin") != nil)
        #expect(CronExpression.timeZone(named: "America/New_York") != nil)
        #expect(CronExpression.timeZone(named: "UTC") != nil)
        #expect(CronExpression.timeZone(named: "Mars/Olympus") == nil)
        #expect(berlin.secondsFromGMT(for: utc("2026-07-01T00:00:00Z")) == 7200)
    }

    @Test func fieldsListsRangesStepsNamesAndAliases() throws {
        #expect(try next("*/15 9-10 * * mon-fri", after: "2026-11-27T10:40:00Z", zone: zulu, count: 3)  // a Friday
                == ["2026-11-27T10:45:00Z", "2026-11-30T09:00:00Z", "2026-11-30T09:15:00Z"])
        #expect(try next("5/20 * * * *", after: "2026-01-01T00:00:00Z", zone: zulu, count: 3)
                == ["2026-01-01T00:05:00Z", "2026-01-01T00:25:00Z", "2026-01-01T00:45:00Z"])
        #expect(try next("0 0 1 jan,JUL *", after: "2026-02-01T00:00:00Z", zone: zulu, count: 2)
                == ["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"])
        // Both day fields restricted: either matches (the 13th, or a Friday).
        #expect(try next("0 12 13 * 5", after: "2026-11-01T00:00:00Z", zone: zulu, count: 3)
                == ["2026-11-06T12:00:00Z", "2026-11-13T12:00:00Z", "2026-11-20T12:00:00Z"])
        #expect(try next("0 0 * * 7", after: "2026-11-30T00:00:00Z", zone: zulu, count: 1) == ["2026-12-06T00:00:00Z"])
        #expect(try next("@daily", after: "2026-11-30T10:00:00Z", zone: zulu, count: 1) == ["2026-12-01T00:00:00Z"])
        #expect(try next("@hourly", after: "2026-11-30T10:00:00Z", zone: zulu, count: 1) == ["2026-11-30T11:00:00Z"])
        #expect(try next("@weekly", after: "2026-11-30T10:00:00Z", zone: zulu, count: 1) == ["2026-12-06T00:00:00Z"])
        #expect(try next("0 0 29 2 *", after: "2026-03-01T00:00:00Z", zone: zulu, count: 1) == ["2028-02-29T00:00:00Z"])
        #expect(try CronExpression(parsing: "0 0 30 2 *").nextFiring(after: utc("2026-01-01T00:00:00Z"), in: zulu) == nil)
    }

    @Test(arguments: [
        ("0 2 * *", 1, "expected 5 fields"),
        ("0 2 * * * 2026", 11, "seconds and years"),
        ("0 24 * * *", 3, "24 is outside 0…23"),
        ("0 2 * * 8", 9, "8 is outside 0…7"),
        ("0 2 * foo *", 7, "or a name (jan…dec)"),
        ("0 17-9 * * *", 3, "runs backwards"),
        ("*/0 * * * *", 1, "step"),
        ("0,,5 * * * *", 3, "empty entry"),
        ("@reboot", 1, "unknown alias"),
    ])
    func errorsNameTheColumn(text: String, column: Int, message: String) {
        #expect {
            try CronExpression(parsing: text)
        } throws: { error in
            guard let error = error as? CronSyntaxError else { return false }
            return error.column == column && error.message.contains(message)
        }
    }

    @Test func berlinSpringForwardFixedTimeFiresAtTheEndOfTheGap() throws {
        // 2026-03-29: 02:00 CET → 03:00 CEST (01:00 UTC). 02:30 does not exist that night.
        #expect(try next("30 2 * * *", after: "2026-03-28T12:00:00Z", zone: berlin, count: 2)
                == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"])
    }

    @Test func berlinFallBackFixedTimeFiresOnce() throws {
        // 2026-10-25: 03:00 CEST → 02:00 CET (01:00 UTC). 02:30 happens at 00:30 and 01:30 UTC: the first only.
        #expect(try next("30 2 * * *", after: "2026-10-24T12:00:00Z", zone: berlin, count: 2)
                == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"])
    }

    @Test func berlinWildcardFollowsTheClock() throws {
        #expect(try next("*/30 * * * *", after: "2026-10-24T23:50:00Z", zone: berlin, count: 5)
                == ["2026-10-25T00:00:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:00:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:00:00Z"])
        #expect(try next("*/30 * * * *", after: "2026-03-29T00:10:00Z", zone: berlin, count: 3)
                == ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"])
    }

    @Test func newYorkChanges() throws {
        // 2026-03-08: 02:00 EST → 03:00 EDT (07:00 UTC); 2026-11-01: 02:00 EDT → 01:00 EST (06:00 UTC).
        #expect(try next("0 2 * * *", after: "2026-03-07T12:00:00Z", zone: newYork, count: 2)
                == ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"])
        #expect(try next("30 1 * * *", after: "2026-10-31T12:00:00Z", zone: newYork, count: 2)
                == ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"])
        #expect(try next("@hourly", after: "2026-11-01T04:30:00Z", zone: newYork, count: 3)
                == ["2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"])
    }

    @Test func missedRunPolicyWithAnInjectedClock() throws {
        let hourly = try CronExpression(parsing: "0 * * * *")
        let clock = ManualScheduleClock(utc("2026-11-30T10:02:00Z"))
        let skip = CronSchedule(cron: hourly, timeZone: zulu, missed: .skip, grace: .seconds(300))
        let catchUp = CronSchedule(cron: hourly, timeZone: zulu, missed: .catchUpOnce, grace: .seconds(300))
        let last = utc("2026-11-30T10:00:00Z")

        // Never fired: nothing is owed.
        #expect(skip.decide(lastFired: nil, clock: clock) == FiringDecision(fire: nil, dropped: 0, next: utc("2026-11-30T11:00:00Z")))
        // Nothing due yet.
        #expect(skip.decide(lastFired: last, clock: clock).fire == nil)
        // On time (3 minutes late, grace 5): fires under both policies.
        clock.set(utc("2026-11-30T11:03:00Z"))
        #expect(skip.decide(lastFired: last, clock: clock) == FiringDecision(fire: utc("2026-11-30T11:00:00Z"), dropped: 0, next: utc("2026-11-30T12:00:00Z")))
        #expect(catchUp.decide(lastFired: last, clock: clock).fire == utc("2026-11-30T11:00:00Z"))
        // Down from 10:30 to 14:30: 11, 12, 13, 14 missed.
        clock.advance(by: 3 * 3600 + 27 * 60)
        #expect(skip.decide(lastFired: last, clock: clock) == FiringDecision(fire: nil, dropped: 4, next: utc("2026-11-30T15:00:00Z")))
        #expect(catchUp.decide(lastFired: last, clock: clock) == FiringDecision(fire: utc("2026-11-30T14:00:00Z"), dropped: 3, next: utc("2026-11-30T15:00:00Z")))
        // After catching up, the next decision owes nothing until 15:00.
        #expect(catchUp.decide(lastFired: utc("2026-11-30T14:00:00Z"), clock: clock).fire == nil)
    }
}
