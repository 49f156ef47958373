import ArgumentParser
import Foundation
import JobProtocol
import JobQueue

struct BatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch",
        abstract: "Batches: groups of jobs (any kinds, any queues) with live counts and callbacks fired once (docs/PIPELINES.md, \"Batches\").",
        subcommands: [BatchCreateCommand.self, BatchSealCommand.self, BatchStatusCommand.self])
}

struct BatchCreateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a batch, enqueue the jobs of a JSON-lines file in it and seal it; print its id (then the job ids with --ids).")

    @OptionGroup var global: GlobalOptions
    @Option(help: "The batch id (default: a new one); 1–100 of A–Z a–z 0–9 - _ . :") var id: String?
    @Option(help: "JSON lines, one job a line (the keys of `jobfarm enqueue --file`); one bad line creates nothing.") var file: String?
    @Option(help: "The job enqueued once when every job is final: {\"kind\", \"queue\", \"tier\", \"payload\", \"max_attempts\", \"timeout\"}.")
    var onComplete: String?
    @Option(help: "The job enqueued once when every job succeeded (same shape as --on-complete).") var onSuccess: String?
    @Flag(help: "Leave it open: add jobs with `jobfarm enqueue --batch ID`, then `jobfarm batch seal ID`.") var open = false
    @Flag(help: "Print the job ids after the batch id.") var ids = false

    func run() async throws {
        let farm = try global.makeFarm()
        var requests: [EnqueueRequest] = []
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else { throw ValidationError("--file \(file): cannot read it; check the path") }
            let defaults = JobLines.Defaults(kind: nil, queue: "default", tier: nil, payload: nil, delay: nil, maxAttempts: 5, timeout: 300)
            requests = try JobLines.requests(file: file, data: data, defaults: defaults, tiers: farm.configuration.tiers)
        }
        let complete = try onComplete.map { try Self.callback($0, option: "--on-complete") }
        let success = try onSuccess.map { try Self.callback($0, option: "--on-success") }
        let created = try await reportingErrors {
            try await farm.createBatch(id: id, jobs: requests, onComplete: complete, onSuccess: success, seal: !open)
        }
        var out = created.id + (created.created ? "" : " exists already (jobs added to it if it was open)") + "\n"
        if ids { for job in created.jobs { out += job.description + "\n" } }
        FileHandle.standardOutput.write(Data(out.utf8))
    }

    static func callback(_ text: String, option: String) throws -> BatchCallback {
        guard let value = try? JSONValue(parsing: text), case .object(let fields) = value, let kind = fields["kind"]?.stringValue else {
            throw ValidationError("\(option) must be a JSON object with at least \"kind\", e.g. {\"kind\": \"echo\", \"payload\": {\"done\": true}}")
        }
        let allowed = ["kind", "queue", "tier", "payload", "max_attempts", "timeout"]
        if let unknown = fields.keys.sorted().first(where: { !allowed.contains($0) }) {
            throw ValidationError("\(option): unknown key \"\(unknown)\"; allowed: \(allowed.joined(separator: ", "))")
        }
        return BatchCallback(kind: kind, queue: fields["queue"]?.stringValue ?? "default", tier: fields["tier"]?.stringValue,
                             payload: fields["payload"] ?? .null, maxAttempts: Int(fields["max_attempts"]?.doubleValue ?? 5),
                             timeout: .milliseconds(Int64((fields["timeout"]?.doubleValue ?? 300) * 1000)))
    }
}

struct BatchSealCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "seal", abstract: "Seal an open batch: no more jobs join it, and its callbacks may fire.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The batch id.") var id: String

    func run() async throws {
        let farm = try global.makeFarm()
        guard try await reportingErrors({ try await farm.batchStatus(id) }) != nil else {
            throw CLIError(message: "no batch \(id): never created, or expired 7 days after its last change")
        }
        let check = try await reportingErrors { try await farm.sealBatch(id) }
        print("sealed \(id)" + (check.firedComplete ? "; every job had ended: completion callback fired" : ""))
    }
}

struct BatchStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a batch: its counts (pending, running, succeeded, dead, cancelled) per queue and in all, and its callbacks; --wait follows it to the end with a progress bar.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The batch id.") var id: String
    @Flag(help: "Wait until every job is final, with a progress bar, then print the counts.") var wait = false
    @Option(parsing: .unconditional, help: "Seconds to wait at most with --wait.") var timeout: Double = 86_400

    func validate() throws {
        try OptionCheck.seconds(timeout, "--timeout", positive: true)
    }

    func run() async throws {
        let farm = try global.makeFarm()
        let interactive = isatty(STDERR_FILENO) == 1
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        var status: BatchStatus
        while true {
            guard let read = try await reportingErrors({ try await farm.batchStatus(id) }) else {
                throw CLIError(message: "no batch \(id): never created, or expired 7 days after its last change")
            }
            status = read
            if !wait || status.isComplete || ContinuousClock.now >= deadline { break }
            if interactive { ProgressLine.show(Self.bar(status.counts)) }
            try await Task.sleep(for: .milliseconds(250))
        }
        if wait && interactive { ProgressLine.clear() }
        print(Self.describe(status))
        if wait {
            if !status.isComplete { throw CLIError(message: "batch \(id) is not complete after \(Int(timeout)) s (`jobfarm batch status \(id) --wait` follows it on)") }
            if status.counts.succeeded != status.counts.total { throw ExitCode(2) }
        }
    }

    /// `████░░░ 9,990/10,000 ended  (running 3, dead 10)`.
    static func bar(_ counts: BatchCounts, width: Int = 30) -> String {
        ProgressLine.bar(done: counts.ended, of: counts.total, width: width)
            + " \(counts.ended)/\(counts.total) ended  (running \(counts.running), dead \(counts.dead), cancelled \(counts.cancelled))"
    }

    static func describe(_ status: BatchStatus) -> String {
        let state = !status.sealed ? "open" : status.counts.isFinal ? "complete" : "running"
        var lines = ["batch \(status.id): \(state)" + (status.consistent ? "" : " (counts changing while read)")]
        func row(_ name: String, _ c: BatchCounts) -> String {
            "  " + name.padding(toLength: 16, withPad: " ", startingAt: 0)
                + [c.total, c.pending, c.running, c.succeeded, c.dead, c.cancelled].map { String($0).leftPadded(9) }.joined()
        }
        lines.append("  QUEUE               TOTAL  PENDING  RUNNING SUCCEEDED    DEAD CANCELLED")
        for (queue, counts) in status.parts.sorted(by: { $0.key < $1.key }) { lines.append(row(queue, counts)) }
        if status.parts.count > 1 { lines.append(row("all", status.counts)) }
        lines.append("  " + bar(status.counts))
        func callback(_ name: String, _ spec: BatchCallback?, _ fired: Int64?) -> String {
            guard let spec else { return "  \(name): none" + (fired != nil ? " (due, marked)" : "") }
            let what = "\(spec.kind) on \(spec.queue), job \(status.id).\(name == "on complete" ? "complete" : "success")"
            return "  \(name): \(what), " + (fired.map { "fired \(isoTime($0))" } ?? "not fired")
        }
        lines.append(callback("on complete", status.onComplete, status.completeFiredAt))
        lines.append(callback("on success", status.onSuccess, status.successFiredAt))
        return lines.joined(separator: "\n")
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? " " + self : String(repeating: " ", count: width - count) + self
    }
}
