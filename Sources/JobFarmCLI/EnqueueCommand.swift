import ArgumentParser
import Foundation
import JobProtocol
import JobQueue

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue", abstract: "Enqueue jobs; prints the job ids, one a line (`<id> duplicate` for a job that existed: its idempotency key was seen within its window).")

    @OptionGroup var global: GlobalOptions
    @Option(help: "Job kind (noop, echo, sleep, fail, …).") var kind: String?
    @Option(help: "A job file (as in jobs/): {\"kind\", \"queue\", \"tier\", \"payload\", \"count\", \"delay\", \"max_attempts\", \"timeout\"}; flags given too override it. Or JSON lines (.jsonl, or several lines): one such object a line, the flags filling what a line leaves out; one bad line enqueues nothing.")
    var file: String?
    @Option(help: "Queue name.") var queue: String = "default"
    @Option(help: "Tier (premium, standard, free by default).") var tier: String?
    @Option(help: "Payload: JSON text, @file, or @- for standard input.") var payload: String?
    @Option(parsing: .unconditional, help: "How many identical jobs (goes through the bulk path).") var count: Int = 1
    @Option(parsing: .unconditional, help: "Run no earlier than this many seconds from now.") var delay: Double?
    @Option(parsing: .unconditional, help: "Attempts before the job is dead-lettered.") var maxAttempts: Int = 5
    @Option(parsing: .unconditional, help: "Seconds one attempt may run.") var timeout: Double = 300
    @Option(help: "Idempotency key: the same key within the window returns the first job's id, printed as `<id> duplicate`.") var idempotencyKey: String?
    @Option(parsing: .unconditional, help: "Seconds the idempotency key is kept (default: the farm's window, 24 h).") var idempotencyWindow: Double?
    @Flag(help: "Wait for the job (the first, with --count) to finish and print its status.") var wait = false
    @Option(help: "Add the jobs to this open batch (`jobfarm batch create --open` makes one; `jobfarm batch seal` closes it).") var batch: String?
    @Flag(help: "Refuse (exit 3, nothing enqueued) when live workers serve the queue and none runs the kind; without it, a warning.")
    var strict = false

    /// Exit status of a refusal by --strict.
    static let strictRefusalExitCode: Int32 = 3

    func validate() throws {
        try OptionCheck.integer(count, "--count", atLeast: 1)
        if let delay { try OptionCheck.seconds(delay, "--delay") }
        try OptionCheck.integer(maxAttempts, "--max-attempts", atLeast: 1, atMost: 1000)
        try OptionCheck.seconds(timeout, "--timeout", positive: true)
        if let idempotencyWindow {
            try OptionCheck.seconds(idempotencyWindow, "--idempotency-window", positive: true)
            guard idempotencyKey != nil else { throw ValidationError("--idempotency-window goes with --idempotency-key KEY") }
        }
    }

    func run() async throws {
        var spec = JobFile()
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("--file \(file): cannot read it; check the path")
            }
            if JobLines.isJSONLines(path: file, data: data) { return try await enqueueLines(file: file, data: data) }
            do {
                spec = try JSONDecoder().decode(JobFile.self, from: data)
            } catch {
                throw ValidationError("--file \(file) is not a job file (\(describeJSONError(error))); see jobs/01-echo.json for the shape")
            }
        }
        guard let kind = kind ?? spec.kind else { throw ValidationError("name the job kind: --kind K (or --file FILE)") }
        let count = self.count != 1 ? self.count : (spec.count ?? 1)
        guard idempotencyKey == nil || count == 1 else { throw ValidationError("--idempotency-key needs --count 1") }
        let body = payload != nil ? try readPayload(payload) : (spec.payload ?? .null)
        let delay = self.delay ?? spec.delay
        if let file {
            // The job file's values get the checks the flags get.
            if let value = spec.count { try OptionCheck.integer(value, "\"count\" in \(file)", atLeast: 1) }
            if let value = spec.delay { try OptionCheck.seconds(value, "\"delay\" in \(file)") }
            if let value = spec.max_attempts { try OptionCheck.integer(value, "\"max_attempts\" in \(file)", atLeast: 1, atMost: 1000) }
            if let value = spec.timeout { try OptionCheck.seconds(value, "\"timeout\" in \(file)", positive: true) }
        }
        let farm = try global.makeFarm()
        let request = EnqueueRequest(
            kind: kind, queue: queue != "default" ? queue : (spec.queue ?? queue), tier: tier ?? spec.tier, payload: body,
            delay: delay.map { .milliseconds(Int64($0 * 1000)) },
            maxAttempts: maxAttempts != 5 ? maxAttempts : (spec.max_attempts ?? maxAttempts),
            timeout: .milliseconds(Int64((timeout != 300 ? timeout : (spec.timeout ?? timeout)) * 1000)),
            idempotencyKey: idempotencyKey, idempotencyWindow: idempotencyWindow.map { .milliseconds(max(1, Int64($0 * 1000))) })
        try await checkCoverage(farm: farm, kind: kind, queue: request.queue)
        let results = try await reportingErrors {
            if let batch { return try await farm.enqueue(Array(repeating: request, count: count), batch: batch) }
            return try await farm.enqueueReporting(Array(repeating: request, count: count))
        }
        let ids = results.map(\.id)
        var out = ""
        for result in results { out += result.description + "\n" }
        FileHandle.standardOutput.write(Data(out.utf8))
        if wait, let first = ids.first {
            let status = try await reportingErrors { try await farm.wait(for: first, queue: request.queue, timeout: .seconds(3600)) }
            printJSON(status.json)
            if status.state != .succeeded { throw ExitCode(2) }
        }
    }
}

extension EnqueueCommand {
    /// Warns on stderr when no live worker of the queue runs the kind (with --strict: refuses), or when no live
    /// worker serves the queue at all (the job waits).
    func checkCoverage(farm: JobFarm, kind: String, queue: String) async throws {
        switch try await reportingErrors({ try await farm.coverage(ofKind: kind, queue: queue) }) {
        case .served:
            return
        case .noLiveWorker:
            warn("warning: no live worker serves queue '\(queue)': the job waits until a worker serving it starts (`jobfarm worker --queues \(queue)`)")
        case .notServed(let kinds, let workers):
            let text = "no live worker of queue '\(queue)' runs kind '\(kind)': its \(workers) live worker(s) run \(kinds.joined(separator: ", ")). "
                + "A worker that takes the job dead-letters it as malformed; check --kind, or start a worker that runs '\(kind)' on queue '\(queue)'"
            if strict { throw CLIError(message: text + ". Nothing enqueued (--strict).", exitCode: Self.strictRefusalExitCode) }
            warn("warning: \(text) (--strict refuses such jobs)")
        }
    }

    private func warn(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}

/// A job file, as in jobs/*.json.
struct JobFile: Decodable {
    var kind: String?
    var queue: String?
    var tier: String?
    var payload: JSONValue?
    var count: Int?
    /// Seconds.
    var delay: Double?
    var max_attempts: Int?
    /// Seconds.
    var timeout: Double?
}
