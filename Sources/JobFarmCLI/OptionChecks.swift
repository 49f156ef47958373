import ArgumentParser
import Foundation

/// Checks of numeric options, each failure naming the option, the rule and the value given
/// (`--count must be at least 1, got -5`).
///
/// Numeric options are declared with `parsing: .unconditional`, so that a negative value reaches these checks
/// instead of being taken for an option (which the parser reports as "Missing value").
enum OptionCheck {
    /// Longest duration any option takes, in seconds (about 31 years): larger values overflow milliseconds.
    static let maximumSeconds = 1e9

    /// An integer in `minimum…maximum`.
    static func integer(_ value: Int, _ option: String, atLeast minimum: Int, atMost maximum: Int? = nil) throws {
        guard value >= minimum else { throw ValidationError("\(option) must be at least \(minimum), got \(value)") }
        if let maximum, value > maximum {
            throw ValidationError("\(option) must be at most \(maximum), got \(value)")
        }
    }

    /// A finite number of seconds, at least `minimum` (or more than zero with `positive`), at most `maximumSeconds`.
    static func seconds(_ value: Double, _ option: String, atLeast minimum: Double = 0, positive: Bool = false, unit: String = "seconds") throws {
        guard value.isFinite else { throw ValidationError("\(option) must be a number of \(unit), got \(value)") }
        if positive {
            guard value > 0 else { throw ValidationError("\(option) must be more than 0 \(unit), got \(format(value))") }
        }
        guard value >= minimum else {
            let shown = minimum == 1 && unit == "seconds" ? "second" : unit
            throw ValidationError("\(option) must be at least \(format(minimum)) \(shown), got \(format(value))")
        }
        guard value <= maximumSeconds else {
            throw ValidationError("\(option) must be at most \(format(maximumSeconds)) \(unit), got \(format(value))")
        }
    }

    /// A comma-separated list of integers, each at least `minimum`.
    static func integers(_ text: String, _ option: String, atLeast minimum: Int) throws -> [Int] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !items.isEmpty else { throw ValidationError("\(option) needs at least one number, got '\(text)'") }
        return try items.map { item in
            guard let value = Int(item) else { throw ValidationError("\(option): '\(item)' is not a whole number (in '\(text)')") }
            guard value >= minimum else { throw ValidationError("\(option): each value must be at least \(minimum), got \(value)") }
            return value
        }
    }

    /// A comma-separated list of finite numbers, each more than zero.
    static func positiveNumbers(_ text: String, _ option: String) throws -> [Double] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !items.isEmpty else { throw ValidationError("\(option) needs at least one number, got '\(text)'") }
        return try items.map { item in
            guard let value = Double(item), value.isFinite else { throw ValidationError("\(option): '\(item)' is not a number (in '\(text)')") }
            guard value > 0 else { throw ValidationError("\(option): each value must be more than 0, got \(item)") }
            return value
        }
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}
