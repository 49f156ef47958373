import Foundation

/// A five-field cron expression (`minute hour day-of-month month day-of-week`), as cron(8) reads it:
/// lists (`1,15`), ranges (`9-17`), steps (`*/15`, `0-30/10`, `5/20`), month names (`jan`…`dec`), day names
/// (`sun`…`sat`, 0 and 7 are Sunday), and the aliases `@yearly`/`@annually`, `@monthly`, `@weekly`,
/// `@daily`/`@midnight`, `@hourly`. When both day fields are restricted (neither starts with `*`), a day matches
/// either one, as in cron.
///
/// Firings are computed on the wall clock of a time zone. Across daylight-saving changes it does what cron does:
/// - a **fixed-time** expression (neither the minute nor the hour field starts with `*`) whose time falls in a
///   skipped hour fires once at the end of the gap (02:30 on the night clocks jump 02:00 → 03:00 fires at 03:00);
///   a time that occurs twice (clocks go back) fires only at its first occurrence;
/// - a **wildcard** expression (`*/15 * * * *`, `30 * * * *`) follows the clock: nothing fires for times that do
///   not exist, and times that occur twice fire twice.
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    /// The text as written.
    public let source: String
    let minutes: [Bool]       // 0…59
    let hours: [Bool]         // 0…23
    let daysOfMonth: [Bool]   // 1…31 (index 0 unused)
    let months: [Bool]        // 1…12 (index 0 unused)
    let daysOfWeek: [Bool]    // 0…6, Sunday = 0
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool
    /// The minute or hour field starts with `*`: follows the clock across DST changes.
    public let isWildcardTime: Bool

    static let aliases = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    static let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    static let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]

    /// Parses an expression; the error names the column (1-based) of the part it could not read.
    public init(parsing text: String) throws(CronSyntaxError) {
        source = text
        var expanded = text.trimmingCharacters(in: .whitespaces)
        let leading = text.prefix { $0 == " " || $0 == "\t" }.count
        if expanded.hasPrefix("@") {
            guard let fields = Self.aliases[expanded.lowercased()] else {
                throw CronSyntaxError(message: "unknown alias `\(expanded)`; use one of \(Self.aliases.keys.sorted().joined(separator: ", ")) or five fields", column: leading + 1)
            }
            expanded = fields
        }
        // Fields with the column each starts at (in the original text, for an expression that is not an alias).
        var fields: [(text: String, column: Int)] = []
        var current = ""
        var start = 0
        let isAlias = expanded != text.trimmingCharacters(in: .whitespaces)
        for (offset, character) in Array(expanded).enumerated() {
            if character == " " || character == "\t" {
                if !current.isEmpty { fields.append((current, isAlias ? leading + 1 : leading + start + 1)); current = "" }
            } else {
                if current.isEmpty { start = offset }
                current.append(character)
            }
        }
        if !current.isEmpty { fields.append((current, isAlias ? leading + 1 : leading + start + 1)) }
        guard fields.count == 5 else {
            let extra = fields.count == 6 ? " (seconds and years are not supported)" : ""
            throw CronSyntaxError(message: "expected 5 fields (minute hour day-of-month month day-of-week), found \(fields.count)\(extra)", column: fields.count > 5 ? fields[5].column : leading + 1)
        }
        minutes = try Self.parseField(fields[0], name: "minute", range: 0...59, names: [])
        hours = try Self.parseField(fields[1], name: "hour", range: 0...23, names: [])
        daysOfMonth = try Self.parseField(fields[2], name: "day of month", range: 1...31, names: [])
        months = try Self.parseField(fields[3], name: "month", range: 1...12, names: Self.monthNames, nameBase: 1)
        var week = try Self.parseField(fields[4], name: "day of week", range: 0...7, names: Self.dayNames)
        if week[7] { week[0] = true }
        daysOfWeek = Array(week[0...6])
        dayOfMonthRestricted = !fields[2].text.hasPrefix("*")
        dayOfWeekRestricted = !fields[4].text.hasPrefix("*")
        isWildcardTime = fields[0].text.hasPrefix("*") || fields[1].text.hasPrefix("*")
    }

    public var description: String { source }

    static func parseField(_ field: (text: String, column: Int), name: String, range: ClosedRange<Int>, names: [String], nameBase: Int = 0) throws(CronSyntaxError) -> [Bool] {
        var allowed = [Bool](repeating: false, count: range.upperBound + 1)
        var column = field.column
        for item in field.text.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            defer { column += item.count + 1 }
            func fail(_ message: String) -> CronSyntaxError {
                CronSyntaxError(message: "\(name) field `\(field.text)`: \(message)", column: column)
            }
            func value(_ text: String) throws(CronSyntaxError) -> Int {
                if let number = Int(text) {
                    guard range.contains(number) else { throw fail("\(number) is outside \(range.lowerBound)…\(range.upperBound)") }
                    return number
                }
                if let index = names.firstIndex(of: text.lowercased()) { return index + nameBase }
                let what = names.isEmpty ? "a number \(range.lowerBound)…\(range.upperBound)" : "a number \(range.lowerBound)…\(range.upperBound) or a name (\(names.first!)…\(names.last!))"
                throw fail("`\(text)` is not \(what)")
            }
            guard !item.isEmpty else { throw fail("empty entry in a list") }
            let stepParts = item.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard stepParts.count <= 2 else { throw fail("`\(item)` has more than one `/`") }
            var step = 1
            if stepParts.count == 2 {
                guard let parsed = Int(stepParts[1]), parsed >= 1 else { throw fail("step `/\(stepParts[1])` must be a whole number ≥ 1") }
                step = parsed
            }
            let base = stepParts[0]
            let low: Int, high: Int
            if base == "*" {
                low = range.lowerBound
                high = name == "day of week" ? 6 : range.upperBound
            } else if let dash = base.firstIndex(of: "-") {
                low = try value(String(base[..<dash]))
                high = try value(String(base[base.index(after: dash)...]))
                guard low <= high else { throw fail("range `\(base)` runs backwards; write the smaller end first") }
            } else {
                low = try value(base)
                // `5/20` means 5, 25, 45: from the value to the end of the range.
                high = stepParts.count == 2 ? (name == "day of week" ? 6 : range.upperBound) : low
            }
            for number in stride(from: low, through: high, by: step) { allowed[number] = true }
        }
        return allowed
    }

    /// A time zone of the IANA database (Foundation reads the system's tz data), or nil.
    public static func timeZone(named identifier: String) -> TimeZone? {
        guard !identifier.isEmpty, let zone = TimeZone(identifier: identifier) else { return nil }
        // Foundation accepts some abbreviations and offsets ("GMT+2"); accept names the database knows, and UTC/GMT.
        if TimeZone.knownTimeZoneIdentifiers.contains(identifier) || ["UTC", "GMT"].contains(identifier) { return zone }
        return nil
    }

    /// Whether a calendar day (in the schedule's zone) can fire.
    func matchesDay(month: Int, day: Int, weekday: Int) -> Bool {
        guard months[month] else { return false }
        let byMonthDay = daysOfMonth[day], byWeekDay = daysOfWeek[weekday]
        if dayOfMonthRestricted && dayOfWeekRestricted { return byMonthDay || byWeekDay }
        return byMonthDay && byWeekDay
    }

    /// The first firing strictly after `instant`, or nil when none comes within ten years (`0 0 30 2 *`).
    public func nextFiring(after instant: Date, in zone: TimeZone) -> Date? {
        let after = Int64(instant.timeIntervalSince1970.rounded(.down))
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let wallNow = after + Int64(zone.secondsFromGMT(for: instant))
        // Start a day early: an instant's wall-clock day and the day a firing is written for can differ near a change.
        var dayStart = (wallNow.floorDivided(by: 86_400) - 1) * 86_400
        var best: Int64?
        var daysAfterFirstHit = 0
        for _ in 0..<(366 * 10 + 3) {
            let components = calendar.dateComponents([.year, .month, .day, .weekday], from: Date(timeIntervalSince1970: TimeInterval(dayStart)))
            if let month = components.month, let day = components.day, let weekday = components.weekday,
               matchesDay(month: month, day: day, weekday: weekday - 1) {
                for hour in 0..<24 where hours[hour] {
                    for minute in 0..<60 where minutes[minute] {
                        for firing in instants(ofWall: dayStart + Int64(hour * 3600 + minute * 60), in: zone) where firing > after {
                            if best == nil || firing < best! { best = firing }
                        }
                    }
                }
            }
            if best != nil {
                // One more day: a repeated hour can put a later wall time before an earlier one.
                if daysAfterFirstHit == 1 { break }
                daysAfterFirstHit += 1
            }
            dayStart += 86_400
        }
        return best.map { Date(timeIntervalSince1970: TimeInterval($0)) }
    }

    /// The next `count` firings after `instant`.
    public func firings(after instant: Date, in zone: TimeZone, count: Int) -> [Date] {
        var out: [Date] = []
        var cursor = instant
        while out.count < count, let next = nextFiring(after: cursor, in: zone) {
            out.append(next)
            cursor = next
        }
        return out
    }

    /// The instants (Unix seconds) a wall-clock time (seconds as if it were UTC) fires at in `zone`, by the rule
    /// in the type's documentation.
    func instants(ofWall wall: Int64, in zone: TimeZone) -> [Int64] {
        func offset(_ seconds: Int64) -> Int64 { Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(seconds)))) }
        var candidates: Set<Int64> = []
        for probe in [wall - 50_400, wall, wall + 50_400] {
            let guess = offset(probe)
            let instant = wall - guess
            if offset(instant) == guess { candidates.insert(instant) }
        }
        let valid = candidates.sorted()
        if valid.count >= 2 { return isWildcardTime ? valid : [valid[0]] }
        if valid.count == 1 { return valid }
        if isWildcardTime { return [] }
        // In a gap: the first instant after the clocks jumped, found by bisection between a time before the gap
        // (old offset) and the instant the wall time would have had with the old offset (already after the jump).
        let before = offset(wall - 50_400)
        var high = wall - before
        var low = high - 26 * 3600
        guard offset(low) == before, offset(high) != before else { return [high] }
        while high - low > 1 {
            let middle = low + (high - low) / 2
            if offset(middle) == before { low = middle } else { high = middle }
        }
        return [high]
    }
}

/// Where and why a cron expression does not parse.
public struct CronSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    /// 1-based column in the expression's text.
    public var column: Int
    public var description: String { "column \(column): \(message)" }
}

extension Int64 {
    func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }
}
