import ArgumentParser
import Foundation
import JobKinds
import JobProtocol
import JobWorker
import MLJobs
import Pipelines

/// The job kinds pipeline and schedule files may name: those this build's workers run, plus kinds the sample
/// pipeline uses whose handler is not built yet (accepted with a warning).
enum FarmKinds {
    /// Kinds `jobfarm worker` runs (built-ins and ML kinds).
    static var runnable: Set<String> {
        Set(HandlerRegistry.builtins().kinds).union([
            InferenceJob.kind, BatchAnalysisJob.kind, QuantizeJob.kind, ValidateJob.kind, TrainJob.kind, PromoteJob.kind,
        ])
    }

    /// Kinds a pipeline may name that no handler of this build runs yet (accepted with a warning).
    static let planned: Set<String> = []
}

struct PipelineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pipeline", abstract: "Pipelines of jobs (DAGs) defined in YAML (docs/PIPELINES.md).",
        subcommands: [PipelineValidateCommand.self, PipelineRunCommand.self, PipelineStatusCommand.self, PipelineCancelCommand.self])
}

struct PipelineValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check pipeline files: prints each one's steps in the order they can run, or every error as file:line:column: key: message.")

    @Argument(help: "Pipeline files (YAML).") var files: [String]
    @Option(name: .customLong("kind"), help: "Also accept this job kind (repeatable), e.g. one a worker of your own runs.")
    var extraKinds: [String] = []

    func run() throws {
        let known = FarmKinds.runnable.union(FarmKinds.planned).union(extraKinds)
        var failed = 0
        for file in files {
            do throws(DefinitionErrors) {
                let pipeline = try ValidatedPipeline.load(path: file, knownKinds: known)
                print(PipelineListing.describe(pipeline))
                for step in pipeline.definition.steps where FarmKinds.planned.contains(step.kind) && !extraKinds.contains(step.kind) {
                    FileHandle.standardError.write(Data("warning: \(step.location(of: "kind")): step `\(step.id)` runs kind `\(step.kind)`, which no handler of this build runs yet; a run would wait at that step\n".utf8))
                }
            } catch {
                failed += 1
                FileHandle.standardError.write(Data((error.description + "\n").utf8))
                FileHandle.standardError.write(Data("\(file): \(error.errors.count) error(s)\n".utf8))
            }
        }
        if failed > 0 { throw ExitCode(1) }
    }
}

/// The text `pipeline validate` prints for a valid file.
enum PipelineListing {
    static func describe(_ pipeline: ValidatedPipeline, now: Date = Date()) -> String {
        let definition = pipeline.definition
        var lines = ["\(definition.file): pipeline `\(definition.name)`, \(definition.steps.count) step(s), queue \(definition.queue)"
                     + (definition.tier.map { "/\($0)" } ?? "") + ", on_failure: \(definition.onFailure.rawValue)"]
        if let schedule = definition.schedule {
            let next = schedule.nextFiring(after: now).map { FiringFormat.text($0, zone: schedule.timeZone) } ?? "never"
            lines.append("  schedule: \"\(schedule.cron)\" \(schedule.timeZoneName), missed: \(schedule.missed.rawValue); next \(next)")
        }
        if !definition.params.isEmpty {
            lines.append("  params: " + definition.params.map { "\($0.name)=\($0.defaultValue?.jsonText ?? "(required)")" }.joined(separator: ", "))
        }
        let width = pipeline.graph.order.map(\.count).max() ?? 0
        for (index, id) in pipeline.graph.order.enumerated() {
            guard let step = pipeline.step(id) else { continue }
            var text = "  \(index + 1). \(id.padding(toLength: width, withPad: " ", startingAt: 0))  \(step.kind) on \(step.queue)" + (step.tier.map { "/\($0)" } ?? "")
            if !step.needs.isEmpty {
                text += "  after \(step.needs.joined(separator: ", "))"
                if step.trigger != .allPassed { text += " (\(step.trigger.rawValue))" }
            }
            if let forEach = step.forEach {
                switch forEach {
                case .list(let items): text += "  for each of \(items.count) items"
                case .template(let reference, _): text += "  for each of ${\(reference)}"
                }
            }
            if let passWhen = step.passWhen { text += "  pass when \(passWhen.source)" }
            if step.onFailure != definition.onFailure { text += "  on_failure: \(step.onFailure.rawValue)" }
            lines.append(text)
        }
        return lines.joined(separator: "\n")
    }
}

/// How firings are printed: wall-clock time in the schedule's zone, and UTC.
enum FiringFormat {
    static func text(_ date: Date, zone: TimeZone) -> String {
        let local = DateFormatter()
        local.locale = Locale(identifier: "en_US_POSIX")
        local.timeZone = zone
        local.dateFormat = "yyyy-MM-dd HH:mm EEE xxx"
        let utc = ISO8601DateFormatter()
        return "\(local.string(from: date)) (\(utc.string(from: date)))"
    }
}
