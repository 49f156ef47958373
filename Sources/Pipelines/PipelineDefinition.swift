import Foundation
import JobProtocol

/// What a step that does not pass does to the run.
public enum FailurePolicy: String, Sendable, Hashable, CaseIterable {
    /// Nothing more is enqueued; steps already running finish; the run ends `failed`.
    case stop
    /// Only the steps that need this one (directly or not) are skipped; independent branches go on.
    case `continue`
}

/// When a step with parents becomes ready.
public enum StepTrigger: String, Sendable, Hashable, CaseIterable {
    /// Every parent passed (the default).
    case allPassed = "all_passed"
    /// Every parent ended and at least one passed (e.g. promote the candidates that passed validation).
    case anyPassed = "any_passed"
    /// Every parent ended, however (clean-up, reports).
    case allEnded = "all_ended"
}

/// A parameter of a pipeline: `--param name=value` at run time, else its default.
public struct PipelineParameter: Sendable {
    public var name: String
    /// Nil: required (written `name: ~` in the file).
    public var defaultValue: JSONValue?
    public var location: SourceLocation
}

/// The list a `for_each` step fans out over: written out, or a template that gives a list at run time.
public enum ForEachSource: Sendable, Hashable {
    case list([PayloadTemplate])
    case template(TemplateReference, SourceLocation)
}

/// One step of a pipeline: a job (or, with `for_each`, one job per element).
public struct StepDefinition: Sendable {
    public var id: String
    public var kind: String
    public var queue: String
    public var tier: String?
    public var payload: PayloadTemplate
    public var needs: [String]
    public var timeout: Duration?
    public var maxAttempts: Int?
    public var passWhen: PassCondition?
    public var onFailure: FailurePolicy
    public var trigger: StepTrigger
    public var forEach: ForEachSource?
    /// Where the step starts, and where each of its keys is.
    public var location: SourceLocation
    var keyLocations: [String: SourceLocation]
    var needsLocations: [SourceLocation]

    /// Where `key` was written (the step's own place when it was left out).
    public func location(of key: String) -> SourceLocation { keyLocations[key] ?? location }
}

/// A pipeline file, parsed: its steps in file order. `ValidatedPipeline` adds the checks and the order.
public struct PipelineDefinition: Sendable {
    public var file: String
    public var name: String
    public var description: String?
    public var schedule: CronSchedule?
    public var queue: String
    public var tier: String?
    public var onFailure: FailurePolicy
    public var params: [PipelineParameter]
    public var steps: [StepDefinition]

    /// The keys a pipeline file may hold.
    public static let keys = ["name", "description", "schedule", "queue", "tier", "on_failure", "params", "steps"]
    /// The keys a step may hold.
    public static let stepKeys = ["id", "kind", "queue", "tier", "payload", "needs", "timeout", "max_attempts", "pass_when", "on_failure", "trigger", "for_each"]
    /// The keys of a `schedule:` mapping.
    public static let scheduleKeys = ["cron", "timezone", "missed", "grace"]
}
