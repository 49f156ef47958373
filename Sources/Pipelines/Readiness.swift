/// The shape of a pipeline the engine advances: each step's parents, failure policy and trigger, in topological
/// order. The run record in Redis stores the same (docs/PIPELINES.md), so the script that ends a step can apply
/// `advance` without the YAML.
public struct PipelineGraph: Sendable, Hashable {
    /// One step as the engine sees it: its parents, failure policy and trigger.
    public struct Step: Sendable, Hashable {
        public var id: String
        public var parents: [String]
        public var onFailure: FailurePolicy
        public var trigger: StepTrigger

        public init(id: String, parents: [String], onFailure: FailurePolicy = .stop, trigger: StepTrigger = .allPassed) {
            self.id = id
            self.parents = parents
            self.onFailure = onFailure
            self.trigger = trigger
        }
    }

    /// Topological order: every step comes after its parents.
    public var steps: [Step]

    public init(steps: [Step]) {
        self.steps = steps
    }

    /// The ids in topological order.
    public var order: [String] { steps.map(\.id) }

    /// The steps that need `id` directly or through others.
    public func descendants(of id: String) -> Set<String> {
        var found: Set<String> = [id]
        for step in steps where step.parents.contains(where: found.contains) { found.insert(step.id) }
        found.remove(id)
        return found
    }
}

/// Where a step of a run is.
public enum StepState: String, Sendable, Hashable, CaseIterable {
    /// Not enqueued yet.
    case waiting
    /// Its job is enqueued or running (for `for_each`: some item jobs have not ended).
    case running
    /// The job succeeded and `pass_when` (if any) held.
    case passed
    /// The job succeeded but `pass_when` was false.
    case notPassed = "not_passed"
    /// The job ended dead (failed after its attempts, timed out, poison…), or its payload could not be built.
    case failed
    /// The job was cancelled.
    case cancelled
    /// Never enqueued: a parent did not pass, or the run stopped.
    case skipped

    /// Ended, one way or another.
    public var isFinal: Bool { self != .waiting && self != .running }
    /// Ended without passing: what the failure policy acts on.
    public var didNotPass: Bool { isFinal && self != .passed }
}

/// How a run ended.
public enum RunOutcome: Sendable, Hashable {
    /// Not stopped: every step passed, or only steps with `on_failure: continue` (and what needed them) did not.
    case succeeded
    /// A step with `on_failure: stop` did not pass (or was skipped); `step` is the first such in topological order.
    case failed(step: String)
    /// Cancelled by an operator.
    case cancelled
}

/// What to do after a change of state: the one rule both this library and the engine's Lua script follow.
public struct RunAdvance: Sendable, Hashable {
    /// Steps to enqueue now (waiting → running), in topological order.
    public var enqueue: [String] = []
    /// Steps that will never run (waiting → skipped), in topological order.
    public var skip: [String] = []
    /// The first stop-policy step that did not pass, when the run is (now) stopped.
    public var stoppedBy: String?
    /// Set when, after applying this, nothing is waiting or running.
    public var outcome: RunOutcome?

    public init(enqueue: [String] = [], skip: [String] = [], stoppedBy: String? = nil, outcome: RunOutcome? = nil) {
        self.enqueue = enqueue
        self.skip = skip
        self.stoppedBy = stoppedBy
        self.outcome = outcome
    }
}

extension PipelineGraph {
    /// Applies the readiness rule to `states` (a missing step is `waiting`):
    ///
    /// 1. The run is **stopped** when it is cancelled, or when a step whose policy is `stop` did not pass
    ///    (`not_passed`, `failed`, `cancelled` or `skipped`).
    /// 2. First pass, in topological order, over the `waiting` steps: a step is **skipped** when the run is stopped,
    ///    or when its trigger can no longer hold — `all_passed`: a parent did not pass; `any_passed`: every parent
    ///    ended and none passed; `all_ended`: never. A skipped step counts as not passed from then on (so skips
    ///    cascade to its children within the same pass, and a skipped `stop` step stops the run).
    /// 3. Second pass: if the run is stopped, every step still waiting is skipped; otherwise a waiting step is
    ///    **ready** (enqueued) when its trigger holds — `all_passed`: every parent passed; `any_passed`: every
    ///    parent ended and one passed; `all_ended`: every parent ended. A step without parents is ready at once.
    /// 4. The run **ends** when no step is waiting or running: `cancelled`, else `failed` (stopped), else
    ///    `succeeded`.
    ///
    /// Pure: the same states always give the same answer, so applying it twice changes nothing the second time.
    public func advance(_ states: [String: StepState], cancelled: Bool = false) -> RunAdvance {
        var state = states
        func current(_ id: String) -> StepState { state[id] ?? .waiting }
        var result = RunAdvance()
        var stoppedBy = steps.first { $0.onFailure == .stop && current($0.id).didNotPass }?.id
        var stopped = cancelled || stoppedBy != nil
        for step in steps where current(step.id) == .waiting {
            let parentStates = step.parents.map(current)
            let doomed: Bool
            switch step.trigger {
            case .allPassed: doomed = parentStates.contains { $0.didNotPass }
            case .anyPassed: doomed = parentStates.allSatisfy(\.isFinal) && !parentStates.contains(.passed) && !parentStates.isEmpty
            case .allEnded: doomed = false
            }
            if stopped || doomed {
                state[step.id] = .skipped
                result.skip.append(step.id)
                if step.onFailure == .stop {
                    if stoppedBy == nil && !cancelled { stoppedBy = step.id }
                    stopped = true
                }
            }
        }
        for step in steps where current(step.id) == .waiting {
            if stopped {
                state[step.id] = .skipped
                result.skip.append(step.id)
                continue
            }
            let parentStates = step.parents.map(current)
            let ready: Bool
            switch step.trigger {
            case .allPassed: ready = parentStates.allSatisfy { $0 == .passed }
            case .anyPassed: ready = parentStates.isEmpty || (parentStates.allSatisfy(\.isFinal) && parentStates.contains(.passed))
            case .allEnded: ready = parentStates.allSatisfy(\.isFinal)
            }
            if ready {
                state[step.id] = .running
                result.enqueue.append(step.id)
            }
        }
        // Skips are reported in topological order whichever pass found them.
        let position = Dictionary(uniqueKeysWithValues: steps.enumerated().map { ($1.id, $0) })
        result.skip.sort { position[$0]! < position[$1]! }
        result.stoppedBy = stoppedBy
        if steps.allSatisfy({ current($0.id).isFinal }) {
            result.outcome = cancelled ? .cancelled : (stoppedBy.map { .failed(step: $0) } ?? .succeeded)
        }
        return result
    }
}

/// The state of a `for_each` step from the states of its item jobs: running until every item ended; then
/// `passed` when all passed, else the first of `failed`, `cancelled`, `not_passed` found among them (in that order of
/// precedence). A `for_each` over an empty list passes at once with an empty result list.
public func combinedState(ofItems items: [StepState]) -> StepState {
    guard items.allSatisfy(\.isFinal) else { return .running }
    for candidate in [StepState.failed, .cancelled, .notPassed, .skipped] where items.contains(candidate) { return candidate }
    return .passed
}
