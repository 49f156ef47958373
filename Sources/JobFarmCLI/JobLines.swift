import ArgumentParser
import Foundation
import JobProtocol
import JobQueue

/// `jobfarm enqueue --file FILE.jsonl`: one job a line, each an object with the keys of a job file (jobs/*.json),
/// so one file can hold different kinds, queues and payloads. Every line is checked before anything is sent;
/// one bad line enqueues nothing.
enum JobLines {
    /// The keys a line may hold.
    static let keys = ["kind", "queue", "tier", "payload", "count", "delay", "max_attempts", "timeout"]

    /// A `.jsonl`/`.ndjson` file, or one that is not a single JSON value but has several lines.
    static func isJSONLines(path: String, data: Data) -> Bool {
        if path.hasSuffix(".jsonl") || path.hasSuffix(".ndjson") { return true }
        if (try? JSONValue(parsing: data)) != nil { return false }
        return String(decoding: data, as: UTF8.self).split(separator: "\n").filter { !$0.allSatisfy(\.isWhitespace) }.count > 1
    }

    /// What a line leaves out comes from the command's flags.
    struct Defaults {
        var kind: String?
        var queue: String
        var tier: String?
        var payload: JSONValue?
        var delay: Double?
        var maxAttempts: Int
        var timeout: Double
    }

    /// The requests of every line, in file order (a line's `count` repeats it); the first bad line throws
    /// `file:line: message`.
    static func requests(file: String, data: Data, defaults: Defaults, tiers: [String]) throws -> [EnqueueRequest] {
        var requests: [EnqueueRequest] = []
        for (index, rawLine) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !line.isEmpty else { continue }
            func fail(_ message: String) -> ValidationError {
                ValidationError("\(file):\(index + 1): \(message); nothing was enqueued")
            }
            let value: JSONValue
            do { value = try JSONValue(parsing: line) } catch { throw fail("not JSON (\(error))") }
            guard case .object(let fields) = value else { throw fail("each line must be a JSON object such as {\"kind\": \"echo\", \"payload\": {}}") }
            if let unknown = fields.keys.sorted().first(where: { !keys.contains($0) }) {
                throw fail("unknown key \"\(unknown)\"; allowed: \(keys.joined(separator: ", "))")
            }
            func string(_ key: String) throws -> String? {
                guard let field = fields[key], field != .null else { return nil }
                guard let text = field.stringValue else { throw fail("\"\(key)\" must be a string, got \(field.kindDescription)") }
                return text
            }
            func number(_ key: String) throws -> Double? {
                guard let field = fields[key], field != .null else { return nil }
                guard let number = field.doubleValue else { throw fail("\"\(key)\" must be a number, got \(field.kindDescription)") }
                return number
            }
            func whole(_ key: String) throws -> Int? {
                guard let number = try number(key) else { return nil }
                guard number == number.rounded(), abs(number) < 1e9 else { throw fail("\"\(key)\" must be a whole number, got \(number)") }
                return Int(number)
            }
            do {
                guard let kind = try string("kind") ?? defaults.kind, !kind.isEmpty, kind.utf8.count <= 128 else {
                    throw fail("no \"kind\" (1–128 characters) on this line and no --kind")
                }
                let queue = try string("queue") ?? defaults.queue
                guard QueueKeys.isValidName(queue) else { throw fail("queue name '\(queue)' must be 1–64 of A–Z a–z 0–9 _ - .") }
                let tier = try string("tier") ?? defaults.tier
                if let tier, !tiers.contains(tier) { throw fail("tier '\(tier)' is not one of \(tiers.joined(separator: ", "))") }
                let count = try whole("count") ?? 1
                try OptionCheck.integer(count, "\"count\"", atLeast: 1, atMost: 1_000_000)
                let delay = try number("delay") ?? defaults.delay
                if let delay { try OptionCheck.seconds(delay, "\"delay\"") }
                let maxAttempts = try whole("max_attempts") ?? defaults.maxAttempts
                try OptionCheck.integer(maxAttempts, "\"max_attempts\"", atLeast: 1, atMost: 1000)
                let timeout = try number("timeout") ?? defaults.timeout
                try OptionCheck.seconds(timeout, "\"timeout\"", positive: true)
                let request = EnqueueRequest(
                    kind: kind, queue: queue, tier: tier, payload: fields["payload"] ?? defaults.payload ?? .null,
                    delay: delay.map { .milliseconds(Int64($0 * 1000)) }, maxAttempts: maxAttempts,
                    timeout: .milliseconds(Int64(timeout * 1000)))
                requests.append(contentsOf: repeatElement(request, count: count))
            } catch let error as ValidationError where !error.description.hasPrefix(file) {
                throw fail(error.description)
            }
        }
        guard !requests.isEmpty else { throw ValidationError("\(file): no jobs (the file has no non-empty line); nothing was enqueued") }
        return requests
    }
}

extension EnqueueCommand {
    /// Enqueues a JSON-lines file through the bulk path and prints the ids, one a line, in file order.
    func enqueueLines(file: String, data: Data) async throws {
        guard count == 1 else { throw ValidationError("--count does not combine with a JSON-lines file; give \"count\" on a line") }
        guard idempotencyKey == nil else { throw ValidationError("--idempotency-key needs one job, not a JSON-lines file") }
        let farm = try global.makeFarm()
        let defaults = JobLines.Defaults(kind: kind, queue: queue, tier: tier, payload: payload != nil ? try readPayload(payload) : nil,
                                         delay: delay, maxAttempts: maxAttempts, timeout: timeout)
        let requests = try JobLines.requests(file: file, data: data, defaults: defaults, tiers: farm.configuration.tiers)
        var checked: Set<String> = []
        for request in requests where checked.insert(request.kind + "\u{0}" + request.queue).inserted {
            try await checkCoverage(farm: farm, kind: request.kind, queue: request.queue)
        }
        let results = try await reportingErrors {
            if let batch { return try await farm.enqueue(requests, batch: batch) }
            return try await farm.enqueueReporting(requests)
        }
        let ids = results.map(\.id)
        FileHandle.standardOutput.write(Data(results.map { $0.description + "\n" }.joined().utf8))
        if wait, let first = ids.first {
            let status = try await reportingErrors { try await farm.wait(for: first, queue: requests[0].queue, timeout: .seconds(3600)) }
            printJSON(status.json)
            if status.state != .succeeded { throw ExitCode(2) }
        }
    }
}
