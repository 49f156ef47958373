import ArgumentParser
import Foundation
import JobProtocol
import JobQueue

struct EnqueueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enqueue", abstract: "Enqueue jobs; prints the new job ids, one a line.")

    @OptionGroup var global: GlobalOptions
    @Option(help: "Job kind (noop, echo, sleep, fail, …).") var kind: String?
    @Option(help: "A job file (as in jobs/): {\"kind\", \"queue\", \"tier\", \"payload\", \"count\", \"delay\", \"max_attempts\", \"timeout\"}; flags given too override it.")
    var file: String?
    @Option(help: "Queue name.") var queue: String = "default"
    @Option(help: "Tier (premium, standard, free by default).") var tier: String?
    @Option(help: "Payload: JSON text, @file, or @- for standard input.") var payload: String?
    @Option(help: "How many identical jobs (goes through the bulk path).") var count: Int = 1
    @Option(help: "Run no earlier than this many seconds from now.") var delay: Double?
    @Option(help: "Attempts before the job is dead-lettered.") var maxAttempts: Int = 5
    @Option(help: "Seconds one attempt may run.") var timeout: Double = 300
    @Option(help: "Idempotency key: the same key within 24 h returns the first job's id.") var idempotencyKey: String?
    @Flag(help: "Wait for the job (the first, with --count) to finish and print its status.") var wait = false

    func run() async throws {
        var spec = JobFile()
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw ValidationError("--file \(file): cannot read it; check the path")
            }
            do {
                spec = try JSONDecoder().decode(JobFile.self, from: data)
            } catch {
                throw ValidationError("--file \(file) is not a job file (\(describeJSONError(error))); see jobs/01-echo.json for the shape")
            }
        }
        guard let kind = kind ?? spec.kind else { throw ValidationError("name the job kind: --kind K (or --file FILE)") }
        let count = self.count != 1 ? self.count : (spec.count ?? 1)
        guard count >= 1 else { throw ValidationError("--count must be at least 1") }
        guard idempotencyKey == nil || count == 1 else { throw ValidationError("--idempotency-key needs --count 1") }
        let body = payload != nil ? try readPayload(payload) : (spec.payload ?? .null)
        let delay = self.delay ?? spec.delay
        let farm = try global.makeFarm()
        let request = EnqueueRequest(
            kind: kind, queue: queue != "default" ? queue : (spec.queue ?? queue), tier: tier ?? spec.tier, payload: body,
            delay: delay.map { .milliseconds(Int64($0 * 1000)) },
            maxAttempts: maxAttempts != 5 ? maxAttempts : (spec.max_attempts ?? maxAttempts),
            timeout: .milliseconds(Int64((timeout != 300 ? timeout : (spec.timeout ?? timeout)) * 1000)),
            idempotencyKey: idempotencyKey)
        let ids = try await reportingErrors {
            try await farm.enqueue(Array(repeating: request, count: count))
        }
        var out = ""
        for id in ids { out += id + "\n" }
        FileHandle.standardOutput.write(Data(out.utf8))
        if wait, let first = ids.first {
            let status = try await reportingErrors { try await farm.wait(for: first, queue: request.queue, timeout: .seconds(3600)) }
            printJSON(status.json)
            if status.state != .succeeded { throw ExitCode(2) }
        }
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
