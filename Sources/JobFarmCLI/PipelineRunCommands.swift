import ArgumentParser
import Foundation
import JobProtocol
import JobQueue
import Pipelines

struct PipelineRunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Validate a pipeline file, start a run of it (its first steps are enqueued at once) and print the run id; --wait follows it to the end.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The pipeline file (YAML).") var file: String
    @Option(name: .customLong("param"), help: "A parameter, name=value (repeatable); the value is read as JSON when it parses, else as text.")
    var params: [String] = []
    @Option(help: "The run id (default: a new one). A run id that exists is not started again.") var runID: String?
    @Flag(help: "Wait until the run ends, with a progress bar, then print its steps.") var wait = false
    @Option(parsing: .unconditional, help: "Seconds to wait at most with --wait.") var timeout: Double = 86_400

    func validate() throws {
        try OptionCheck.seconds(timeout, "--timeout", positive: true)
    }

    func run() async throws {
        var given: [String: String] = [:]
        for text in params {
            guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
                throw ValidationError("--param \(text): write it as name=value")
            }
            given[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        let pipeline: ValidatedPipeline
        do throws(DefinitionErrors) {
            pipeline = try ValidatedPipeline.load(path: file, knownKinds: FarmKinds.runnable)
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw CLIError(message: "\(file): \(error.errors.count) error(s); nothing was started (check it with `jobfarm pipeline validate \(file)`)")
        }
        let values: [String: JSONValue]
        do throws(ParameterError) {
            values = try pipeline.parameters(given: given)
        } catch {
            throw CLIError(message: "\(file): \(error.message); nothing was started")
        }
        let farm = try global.makeFarm()
        let started = try await reportingErrors { try await farm.startRun(pipeline, params: values, runID: runID) }
        if !started.created {
            print("\(started.runID) exists already (\(started.state)): not started again")
        } else {
            print(started.runID)
        }
        if wait {
            try await PipelineStatusCommand.follow(started.runID, farm: farm, timeout: timeout)
        }
    }
}

struct PipelineStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a run: every step with its state, job id, duration, result summary and why it did not pass; --wait follows it to the end.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The run id (`jobfarm pipeline run` prints it).") var runID: String
    @Flag(help: "Wait until the run ends, with a progress bar of the steps that ended.") var wait = false
    @Option(parsing: .unconditional, help: "Seconds to wait at most with --wait.") var timeout: Double = 86_400

    func validate() throws {
        try OptionCheck.seconds(timeout, "--timeout", positive: true)
    }

    func run() async throws {
        let farm = try global.makeFarm()
        if wait {
            try await Self.follow(runID, farm: farm, timeout: timeout)
            return
        }
        guard let status = try await reportingErrors({ try await farm.runStatus(runID) }) else {
            throw CLIError(message: "no run \(runID): never started, or expired 7 days after it ended")
        }
        print(Self.describe(status))
    }

    /// Polls the run until it ends, drawing a progress bar of ended steps on a terminal; prints its steps; exits 2
    /// unless it succeeded.
    static func follow(_ runID: String, farm: JobFarm, timeout: Double) async throws {
        let interactive = isatty(STDERR_FILENO) == 1
        let deadline = ContinuousClock.now + .milliseconds(Int64(timeout * 1000))
        var last: RunStatus?
        while true {
            guard let status = try await reportingErrors({ try await farm.runStatus(runID) }) else {
                throw CLIError(message: "no run \(runID): never started, or expired")
            }
            last = status
            if status.isFinal || ContinuousClock.now >= deadline { break }
            if interactive {
                let running = status.steps.filter { $0.state == "running" }.map(\.id).joined(separator: ", ")
                let bar = ProgressLine.bar(done: status.endedSteps, of: max(1, status.steps.count))
                ProgressLine.show("\(bar) \(status.endedSteps)/\(status.steps.count) steps  \(running)")
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        if interactive { ProgressLine.clear() }
        guard let status = last else { return }
        print(describe(status))
        if !status.isFinal { throw CLIError(message: "run \(runID) is still running after \(Int(timeout)) s (`jobfarm pipeline status \(runID) --wait` follows it on)") }
        if status.state != "succeeded" { throw ExitCode(2) }
    }

    static func describe(_ status: RunStatus) -> String {
        var head = "run \(status.runID): pipeline \(status.pipeline), \(status.state)"
        if let created = status.created {
            head += ", started \(isoTime(created))"
            if let ended = status.ended { head += ", took \(seconds(ended - created))" }
        }
        if let by = status.stoppedBy, status.state == "failed" { head += ", stopped by \(by)" }
        var lines = [head]
        let idWidth = max(4, status.steps.map(\.id.count).max() ?? 0)
        let jobWidth = max(3, status.steps.map { ($0.job ?? "-").count + ($0.items.map { " ×\($0)" }?.count ?? 0) }.max() ?? 0)
        lines.append("  " + "STEP".padding(toLength: idWidth, withPad: " ", startingAt: 0) + "  STATE       "
                     + "JOB".padding(toLength: jobWidth, withPad: " ", startingAt: 0) + "  TIME     RESULT / REASON")
        for step in status.steps {
            let job = (step.job ?? "-") + (step.items.map { " ×\($0)" } ?? "")
            let time: String
            if let duration = step.duration {
                time = seconds(duration.milliseconds)
            } else if step.state == "running", let started = step.started {
                time = seconds(WallClock.nowMilliseconds() - started) + "…"
            } else {
                time = "-"
            }
            var detail = step.result.map(summary) ?? ""
            if let reason = step.reason { detail = detail.isEmpty ? reason : "\(reason) — \(detail)" }
            if step.state == "running", let items = step.items { detail = "\(step.endedItems ?? 0)/\(items) items ended" + (detail.isEmpty ? "" : " — \(detail)") }
            lines.append("  " + step.id.padding(toLength: idWidth, withPad: " ", startingAt: 0) + "  "
                         + step.state.padding(toLength: 10, withPad: " ", startingAt: 0) + "  "
                         + job.padding(toLength: jobWidth, withPad: " ", startingAt: 0) + "  "
                         + time.padding(toLength: 7, withPad: " ", startingAt: 0) + "  " + detail)
        }
        return lines.joined(separator: "\n")
    }

    static func seconds(_ milliseconds: Int64) -> String {
        String(format: "%.1fs", Double(milliseconds) / 1000)
    }

    /// A result in one line: an object's scalar fields (the first few), a list's length, or the value.
    static func summary(_ value: JSONValue) -> String {
        let text: String
        switch value {
        case .object(let fields):
            let preferred = ["model", "passed", "promoted", "previous", "accuracy", "holdoutAccuracy", "sizeRatio", "reference", "note", "rows"]
            var parts: [String] = []
            // A validation's checks that failed say why it did not pass: `failed accuracy 0.9623 (min 0.97)`.
            if case .array(let checks)? = fields["checks"] {
                for case .object(let check) in checks where check["passed"] == .bool(false) {
                    let metric = check["metric"]?.stringValue ?? "?"
                    let value = check["value"].map { $0 == .null ? "none" : $0.jsonText } ?? "none"
                    parts.append("failed \(metric) \(value) (limit \(check["threshold"]?.jsonText ?? "?"))")
                }
            }
            for key in preferred + fields.keys.sorted() where !parts.contains(where: { $0.hasPrefix(key + "=") }) {
                guard let field = fields[key], parts.count < 6 else { continue }
                switch field {
                case .string(let s): parts.append("\(key)=\(s)")
                case .number(let n): parts.append("\(key)=\(n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(format: "%.4g", n))")
                case .bool(let b): parts.append("\(key)=\(b)")
                default: continue
                }
            }
            text = parts.joined(separator: " ")
        case .array(let items):
            text = "[\(items.count) item\(items.count == 1 ? "" : "s")]"
        default:
            text = value.jsonText
        }
        return text.count > 140 ? String(text.prefix(140)) + "…" : text
    }
}

struct PipelineCancelCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cancel",
        abstract: "Cancel a run: nothing more is enqueued, its running jobs are cancelled, and it ends `cancelled`.")

    @OptionGroup var global: GlobalOptions
    @Argument(help: "The run id.") var runID: String

    func run() async throws {
        let farm = try global.makeFarm()
        switch try await reportingErrors({ try await farm.cancelRun(runID) }) {
        case .notFound:
            throw CLIError(message: "no run \(runID): never started, or expired 7 days after it ended")
        case .alreadyEnded(let state):
            print("run \(runID) had ended already (\(state)); nothing changed")
        case .cancelling(let jobs):
            print("run \(runID): cancelled; \(jobs) running job(s) are being cancelled (`jobfarm pipeline status \(runID) --wait` follows them)")
        }
    }
}
