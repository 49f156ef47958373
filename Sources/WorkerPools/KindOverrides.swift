import Foundation
import Yams

/// What a pool's `retry:` entry changes in one kind's retry policy; a field left out keeps the handler's value.
///
/// ```yaml
/// retry:
///   inference: {max_attempts: 5, base: 500ms, cap: 1m}
/// ```
public struct RetryOverride: Sendable, Equatable {
    /// Most attempts (the envelope's own `max_attempts` still bounds it).
    public var maxAttempts: Int?
    /// The pause after the first failed attempt, in seconds.
    public var baseSeconds: Double?
    /// Each further pause is the one before × this.
    public var multiplier: Double?
    /// The longest pause, in seconds.
    public var capSeconds: Double?
    /// The share of each pause drawn at random (0…1).
    public var jitter: Double?
    /// The line of the kind's entry in the file (for errors found later, such as a kind no worker runs).
    public var line: Int?

    /// An override of the given fields.
    public init(maxAttempts: Int? = nil, baseSeconds: Double? = nil, multiplier: Double? = nil, capSeconds: Double? = nil,
                jitter: Double? = nil, line: Int? = nil) {
        self.maxAttempts = maxAttempts
        self.baseSeconds = baseSeconds
        self.multiplier = multiplier
        self.capSeconds = capSeconds
        self.jitter = jitter
        self.line = line
    }
}

/// A pool's `timeouts:` entry for one kind: the longest an attempt may run. A job whose own timeout is shorter keeps
/// it; a longer one is cut to this.
public struct TimeoutCap: Sendable, Equatable {
    /// The cap, in seconds.
    public var seconds: Double
    /// The line of the kind's entry in the file.
    public var line: Int?

    /// A cap of `seconds`.
    public init(seconds: Double, line: Int? = nil) {
        self.seconds = seconds
        self.line = line
    }
}

extension PoolsFileReader {
    static let retryKeys = ["max_attempts", "base", "multiplier", "cap", "jitter"]

    /// A duration: a number of seconds (`90`, `0.5`) or a number with a unit (`500ms`, `30s`, `30m`, `2h`).
    func duration(_ node: Node, _ key: String) throws -> Double {
        let allowed = "a duration: seconds (90, 0.5) or a number with ms, s, m or h (500ms, 30s, 30m, 2h)"
        guard node.scalar != nil, let text = node.string?.trimmingCharacters(in: .whitespaces), !text.isEmpty else {
            throw error(node, key, "must be \(allowed) (found \(kind(node)))")
        }
        var number = Substring(text)
        var scale = 1.0
        for (suffix, factor) in [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where text.hasSuffix(suffix) {
            number = text.dropLast(suffix.count)
            scale = factor
            break
        }
        guard let value = Double(number.trimmingCharacters(in: .whitespaces)), value.isFinite, value * scale > 0 else {
            throw error(node, key, "must be \(allowed), above 0 (found '\(text)')")
        }
        return value * scale
    }

    /// The kinds of a `retry:` or `timeouts:` mapping: any kind name, each once.
    func kindMembers(_ node: Node, _ key: String, example: String) throws -> [(String, Node, Int?)] {
        guard let mapping = node.mapping else {
            throw error(node, key, "must be a mapping of job kinds, e.g. \(example)")
        }
        var result: [(String, Node, Int?)] = []
        for (name, value) in mapping {
            guard let kind = name.string?.trimmingCharacters(in: .whitespaces), !kind.isEmpty, kind.utf8.count <= 128 else {
                throw error(name, key, "has a key that is not a job kind (1–128 characters), e.g. \(example)")
            }
            guard !result.contains(where: { $0.0 == kind }) else {
                throw error(name, "\(key).\(kind)", "appears twice in one mapping; keep one")
            }
            result.append((kind, value, name.mark?.line))
        }
        return result
    }

    /// `retry: {KIND: {max_attempts: N, base: D, multiplier: X, cap: D, jitter: S}, …}`.
    func readRetry(_ node: Node, key: String) throws -> [String: RetryOverride] {
        var result: [String: RetryOverride] = [:]
        for (kind, value, line) in try kindMembers(node, key, example: "retry: {inference: {max_attempts: 5, base: 500ms}}") {
            let child = "\(key).\(kind)"
            var override = RetryOverride(line: line)
            let fields = try members(value, child, allowed: Self.retryKeys)
            guard !fields.isEmpty else {
                throw error(value, child, "names nothing to change; allowed: \(Self.retryKeys.joined(separator: ", "))")
            }
            for (name, field) in fields {
                let path = "\(child).\(name)"
                switch name {
                case "max_attempts":
                    let attempts = try integer(field, path, atLeast: 1)
                    guard attempts <= 1000 else { throw error(field, path, "must be 1…1000 (found \(attempts))") }
                    override.maxAttempts = attempts
                case "base": override.baseSeconds = try duration(field, path)
                case "multiplier": override.multiplier = try number(field, path, atLeast: 1)
                case "cap": override.capSeconds = try duration(field, path)
                case "jitter":
                    let share = try number(field, path, atLeast: 0)
                    guard share <= 1 else { throw error(field, path, "must be a share from 0 to 1 (found \(share))") }
                    override.jitter = share
                default: break
                }
            }
            result[kind] = override
        }
        return result
    }

    /// `timeouts: {KIND: D, …}`.
    func readTimeouts(_ node: Node, key: String) throws -> [String: TimeoutCap] {
        var result: [String: TimeoutCap] = [:]
        for (kind, value, line) in try kindMembers(node, key, example: "timeouts: {train: 30m, inference: 10s}") {
            let seconds = try duration(value, "\(key).\(kind)")
            guard seconds >= 0.001 else { throw error(value, "\(key).\(kind)", "must be at least 1ms (found \(seconds) s)") }
            result[kind] = TimeoutCap(seconds: seconds, line: line)
        }
        return result
    }
}
