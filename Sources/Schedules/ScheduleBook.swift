import Crypto
import Foundation
import JobProtocol
import JobQueue
import JobWorker
import Logging
import Pipelines

/// Starts a scheduled pipeline run: the seam between schedules and the pipeline engine (wired to
/// `JobFarm.startRun` by whoever builds the worker; tests inject a recording one).
public protocol PipelineRunStarter: Sendable {
    /// Starts a run of `pipeline` with the id `runID` and the parameters `params` (given ones and defaults), its
    /// `run.date`/`run.time` taken from `firing` in `zone`. A second start of the same `runID` must start nothing
    /// (the engine's `run_create` refuses it): return `false` then, `true` when this call started the run.
    func startRun(_ pipeline: ValidatedPipeline, params: [String: JSONValue], runID: String, firing: Date, zone: TimeZone) async throws -> Bool
}

/// The farm's cron schedules: stores them (`<ns>:schedules`), keeps each one's chain of firing jobs, and fires.
///
/// There is no scheduler process. Each firing is a delayed job of the reserved kind `jf.schedule` in the target's
/// queue, with the id `sched.<name>.<version>.<firing unix seconds>`; running it (`fire`, any worker) enqueues the
/// next firing job, then fires the target with a deterministic id (a job `sched.<name>.<firing unix seconds>.job`,
/// or a pipeline run `s-<firing unix seconds>-<hash of the name>`). Every enqueue of an id that exists is a no-op,
/// so any number of workers, `schedule sync` calls and retries make one firing per time (docs/PIPELINES.md,
/// "Schedules").
public struct ScheduleBook: Sendable {
    /// The reserved job kind of a firing.
    public static let firingKind = "jf.schedule"

    public let farm: JobFarm
    public let clock: any ScheduleClock
    /// Starts pipeline runs; `nil`: this process fires only job targets (a pipeline firing fails, visibly).
    public let starter: (any PipelineRunStarter)?
    let logger: Logger

    public init(farm: JobFarm, clock: any ScheduleClock = SystemScheduleClock(), starter: (any PipelineRunStarter)? = nil,
                logger: Logger = Logger(label: "jobfarm.schedules")) {
        self.farm = farm
        self.clock = clock
        self.starter = starter
        self.logger = logger
    }

    // MARK: - Ids

    /// The id of the firing job of `definition` at `time`.
    public static func firingJobID(_ name: String, version: String, at time: Date) -> String {
        "sched.\(name).\(version).\(unixSeconds(time))"
    }

    /// The id of the job a schedule fires at `time` (the same for every version: a changed schedule does not fire
    /// a time twice).
    public static func targetJobID(_ name: String, at time: Date) -> String { "sched.\(name).\(unixSeconds(time)).job" }

    /// The run id of the pipeline run a schedule fires at `time`.
    public static func runID(_ name: String, at time: Date) -> String {
        let hash = SHA256.hash(data: Array(name.utf8)).prefix(6).map { String(format: "%02x", $0) }.joined()
        return "s-\(unixSeconds(time))-\(hash)"
    }

    static func unixSeconds(_ time: Date) -> Int64 { Int64(time.timeIntervalSince1970.rounded(.down)) }

    // MARK: - Managing schedules

    /// A stored schedule, or the reason it cannot be read.
    public struct Stored: Sendable {
        public var name: String
        public var definition: ScheduleDefinition?
        public var problem: String?
        /// The next firing after now (nil: never, or unreadable).
        public var next: Date?
    }

    /// What `sync` changed.
    public struct SyncReport: Sendable, Equatable {
        public var added: [String] = []
        public var changed: [String] = []
        public var unchanged: [String] = []
        public var removed: [String] = []
        /// Firing jobs newly enqueued (the rest existed).
        public var firingsEnqueued = 0
    }

    /// Adds or replaces schedules and enqueues each one's next firing. Returns the next firing of each.
    @discardableResult
    public func add(_ definitions: [ScheduleDefinition]) async throws -> [String: Date] {
        for definition in definitions {
            guard ScheduleDefinition.isValidName(definition.name) else {
                throw ScheduleError("schedule name `\(definition.name)` must be 1–64 of A–Z a–z 0–9 _ -")
            }
            _ = try definition.cronSchedule()
        }
        try await farm.storeScheduleRecords(Dictionary(definitions.map { ($0.name, $0.json) }, uniquingKeysWith: { $1 }))
        return try await enqueueNextFirings(of: definitions).next
    }

    /// Removes schedules by name; their pending firing jobs do nothing when they run. Returns how many existed.
    @discardableResult
    public func remove(_ names: [String]) async throws -> Int { try await farm.removeScheduleRecords(named: names) }

    /// Every stored schedule, sorted by name.
    public func list() async throws -> [Stored] {
        let now = clock.now()
        return try await farm.scheduleRecords().sorted { $0.key < $1.key }.map { name, json in
            do {
                let definition = try ScheduleDefinition(json: json)
                return Stored(name: name, definition: definition, problem: nil, next: try definition.cronSchedule().nextFiring(after: now))
            } catch {
                return Stored(name: name, definition: nil, problem: "\(error)", next: nil)
            }
        }
    }

    /// Makes the stored schedules of `origin` (a file) what `definitions` declare: adds new ones, replaces changed
    /// ones (a new version: the old chain stops), removes those of the same origin the file no longer declares,
    /// leaves the rest (`schedule add`'s, other files') alone; then enqueues every schedule's next firing.
    public func sync(_ definitions: [ScheduleDefinition], origin: String) async throws -> SyncReport {
        var report = SyncReport()
        for definition in definitions { _ = try definition.cronSchedule() }
        let stored = try await farm.scheduleRecords()
        var store: [String: String] = [:]
        for definition in definitions {
            var definition = definition
            definition.origin = origin
            if let json = stored[definition.name], let old = try? ScheduleDefinition(json: json) {
                if old.version == definition.version && old.origin == origin {
                    report.unchanged.append(definition.name)
                    continue
                }
                report.changed.append(definition.name)
            } else {
                report.added.append(definition.name)
            }
            store[definition.name] = definition.json
        }
        let declared = Set(definitions.map(\.name))
        for (name, json) in stored where !declared.contains(name) {
            if let old = try? ScheduleDefinition(json: json), old.origin == origin { report.removed.append(name) }
        }
        try await farm.storeScheduleRecords(store)
        try await farm.removeScheduleRecords(named: report.removed)
        report.firingsEnqueued = try await enqueueNextFirings()
        report.added.sort()
        report.changed.sort()
        report.removed.sort()
        report.unchanged.sort()
        return report
    }

    /// Enqueues the next firing job of every stored schedule (a no-op for those that exist): repairs a chain an
    /// operator broke (a purged firing job) and starts new ones. Run every minute by each worker. Returns how many
    /// firing jobs were new.
    @discardableResult
    public func enqueueNextFirings() async throws -> Int {
        var definitions: [ScheduleDefinition] = []
        for (name, json) in try await farm.scheduleRecords() {
            do {
                definitions.append(try ScheduleDefinition(json: json))
            } catch {
                logger.error("a stored schedule cannot be read; it does not fire until it is added again", metadata: ["schedule": "\(name)", "error": "\(error)"])
            }
        }
        return try await enqueueNextFirings(of: definitions).new
    }

    func enqueueNextFirings(of definitions: [ScheduleDefinition]) async throws -> (new: Int, next: [String: Date]) {
        let now = clock.now()
        var requests: [EnqueueRequest] = []
        var next: [String: Date] = [:]
        for definition in definitions {
            let schedule: CronSchedule
            do { schedule = try definition.cronSchedule() } catch {
                logger.error("a stored schedule cannot fire", metadata: ["schedule": "\(definition.name)", "error": "\(error)"])
                continue
            }
            guard let time = schedule.nextFiring(after: now) else { continue }
            next[definition.name] = time
            requests.append(firingRequest(definition, at: time))
        }
        guard !requests.isEmpty else { return (0, next) }
        let results = try await farm.enqueueReporting(requests)
        return (results.filter { !$0.duplicate }.count, next)
    }

    /// The firing job of `definition` at `time`, delayed until then.
    func firingRequest(_ definition: ScheduleDefinition, at time: Date) -> EnqueueRequest {
        let version = definition.version
        return EnqueueRequest(
            kind: Self.firingKind, queue: definition.queue, tier: definition.tier,
            payload: .object([
                "schedule": .string(definition.name), "version": .string(version),
                "at": .number(Double(Self.unixSeconds(time))),
            ]),
            delay: clock.realDelay(until: time), maxAttempts: 10, timeout: .seconds(120),
            id: Self.firingJobID(definition.name, version: version, at: time))
    }

    // MARK: - Firing

    /// What one firing job did.
    public struct FiringOutcome: Sendable, Equatable {
        /// `fired`, `nothing_due` (a missed firing dropped under `skip`), `removed` (the schedule is gone) or
        /// `superseded` (the schedule changed: its new version fires instead).
        public var outcome: String
        /// The firing time run (the job's own, or the latest missed one with `catch_up_once`).
        public var fired: Date?
        /// The job id or run id fired, and whether it existed already (the time was fired before).
        public var target: String?
        public var duplicate = false
        /// Missed firings dropped.
        public var dropped = 0
        /// The next firing enqueued.
        public var next: Date?

        /// The job's result.
        public var json: JSONValue {
            var object: [String: JSONValue] = ["outcome": .string(outcome), "dropped": .number(Double(dropped))]
            let format = ISO8601DateFormatter()
            if let fired { object["fired"] = .string(format.string(from: fired)) }
            if let target { object["target"] = .string(target); object["duplicate"] = .bool(duplicate) }
            if let next { object["next"] = .string(format.string(from: next)) }
            return .object(object)
        }
    }

    /// Runs the firing job of schedule `name`, version `version`, for the firing time `at`: if the schedule still
    /// has that version, enqueues the next firing job, then fires what the missed-run policy says (at `at`, or the
    /// latest missed time with `catch_up_once`; nothing for a late firing under `skip`). Safe to repeat.
    public func fire(schedule name: String, version: String, at: Date) async throws -> FiringOutcome {
        guard let json = try await farm.scheduleRecord(named: name) else { return FiringOutcome(outcome: "removed") }
        let definition = try ScheduleDefinition(json: json)
        guard definition.version == version else { return FiringOutcome(outcome: "superseded") }
        let schedule = try definition.cronSchedule()
        // The server promoted the job at its time: a clock a little behind it still counts the firing as due.
        let now = max(clock.now(), at)
        let decision = schedule.decide(lastFired: at.addingTimeInterval(-1), now: now)
        var outcome = FiringOutcome(outcome: "nothing_due", dropped: decision.dropped, next: decision.next)
        // The next firing first: a target that fails (or a pipeline no starter runs) does not break the chain.
        if let next = decision.next { _ = try await farm.enqueueReporting([firingRequest(definition, at: next)]) }
        guard let time = decision.fire else {
            if decision.dropped > 0 {
                logger.notice("missed firings dropped (missed: skip)", metadata: ["schedule": "\(name)", "dropped": "\(decision.dropped)"])
            }
            return outcome
        }
        outcome.outcome = "fired"
        outcome.fired = time
        switch definition.target {
        case .job(let kind, let queue, let tier, let payload):
            let id = Self.targetJobID(name, at: time)
            let result = try await farm.enqueueReporting([EnqueueRequest(
                kind: kind, queue: queue, tier: tier, payload: payload, trace: ["schedule": name], id: id)])[0]
            outcome.target = result.id
            outcome.duplicate = result.duplicate
        case .pipeline(let file, let source, let params, _, _):
            let runID = Self.runID(name, at: time)
            outcome.target = runID
            guard let starter else {
                throw JobError.nonRetryable("schedule \(name) fires the pipeline \(file), but this worker was built without the pipeline engine: run workers of a build that starts pipeline runs (the next firing is enqueued)")
            }
            let pipeline: ValidatedPipeline
            let values: [String: JSONValue]
            do {
                pipeline = try ValidatedPipeline.validate(yaml: source, file: file, knownKinds: nil)
                values = try pipeline.parameters(given: params.mapValues(\.jsonText))
            } catch {
                throw JobError.nonRetryable("schedule \(name): the stored pipeline \(file) does not validate: \(error); fix the file and run `jobfarm schedule sync`")
            }
            outcome.duplicate = !(try await starter.startRun(pipeline, params: values, runID: runID, firing: time, zone: schedule.timeZone))
        }
        return outcome
    }
}
