import Foundation
import JobProtocol
import Logging
import Pipelines
import RedisClient
import Synchronization

/// What `startRun` did.
public struct RunStart: Sendable, Equatable {
    public var runID: String
    /// False when a run with this id existed already (a schedule fired twice): nothing was started, `state` is its.
    public var created: Bool
    /// The run's state: `running`, `succeeded`, `failed` or `cancelled`.
    public var state: String
}

/// A run as `runStatus` reads it from Redis.
public struct RunStatus: Sendable {
    /// One step of the run.
    public struct Step: Sendable {
        public var id: String
        /// `waiting`, `running`, `passed`, `not_passed`, `failed`, `cancelled` or `skipped`.
        public var state: String
        public var job: String?
        public var queue: String
        /// Server ms when it was enqueued and when it ended.
        public var started: Int64?
        public var ended: Int64?
        /// Why it did not pass, or why it was skipped.
        public var reason: String?
        /// Its result as copied into the run (a `for_each` step: the list of its items' results).
        public var result: JSONValue?
        /// A `for_each` step's item count (once known) and how many of them ended.
        public var items: Int?
        public var endedItems: Int?

        /// Time from enqueue to end (or nil while it runs).
        public var duration: Duration? {
            guard let started, let ended else { return nil }
            return .milliseconds(max(0, ended - started))
        }
    }

    public var runID: String
    public var pipeline: String
    /// `running`, `succeeded`, `failed` or `cancelled`.
    public var state: String
    /// Server ms.
    public var created: Int64?
    public var ended: Int64?
    /// The step that stopped a failed run.
    public var stoppedBy: String?
    public var params: JSONValue?
    /// The steps in topological order.
    public var steps: [Step]

    /// True once the run ended.
    public var isFinal: Bool { state != "running" }
    /// Steps that ended, one way or another.
    public var endedSteps: Int { steps.filter { !["waiting", "running"].contains($0.state) }.count }
}

/// What `cancelRun` did.
public enum RunCancelOutcome: Sendable, Equatable {
    /// Every waiting step is skipped; the running jobs (this many) are being cancelled; the run ends `cancelled`
    /// once their ends are applied.
    case cancelling(jobs: Int)
    /// The run had ended already, in this state.
    case alreadyEnded(String)
    case notFound
}

/// The pipeline engine's operations on the farm (docs/PIPELINES.md, "Engine design"): a run is a record in Redis,
/// advanced by whoever applies a job's end notice, through the run scripts. There is no coordinator process:
/// `startRun` creates the record and enqueues the roots; a worker that reports the end of a pipeline job applies
/// its notice at once (`report`); the maintenance loop applies notices left behind and sweeps quiet runs.
extension JobFarm {
    /// How long a run's keys are kept after it ends.
    public static let runRetention: Duration = .seconds(7 * 24 * 3600)

    /// `ns:{run:<r>}:`, the prefix of every key of a run (one hash slot).
    func runPrefix(_ runID: String) -> String { "\(configuration.namespace):{run:\(runID)}:" }
    /// ZSET run id → last change (ms) of the runs not ended: the sweeper's list.
    var runsIndex: String { "\(configuration.namespace):runs" }

    /// Starts a run of a validated pipeline: checks the parameters (given values, else the defaults), writes the
    /// run record, and enqueues the steps without parents.
    /// - Parameters:
    ///   - params: values by parameter name; the file's defaults fill the rest.
    ///   - runID: a caller-chosen id (a schedule's `s-<firing secs>-<hash>`): a run id that exists is not started
    ///     again (`created` false). Nil makes a new id.
    ///   - start: the run's (or its firing's) time, for `${run.date}` (in the schedule's time zone) and `${run.time}`.
    ///   - zone: the time zone of `${run.date}`; nil: the pipeline's own `schedule:` zone, else UTC.
    @discardableResult
    public func startRun(_ pipeline: ValidatedPipeline, params: [String: JSONValue] = [:], runID: String? = nil,
                         start: Date = Date(), zone: TimeZone? = nil) async throws -> RunStart {
        let definition = pipeline.definition
        let declared = Set(definition.params.map(\.name))
        var values: [String: JSONValue] = [:]
        var problems: [String] = []
        for name in params.keys.sorted() where !declared.contains(name) {
            problems.append("unknown parameter `\(name)` (this pipeline has: \(declared.isEmpty ? "none" : declared.sorted().joined(separator: ", ")))")
        }
        for parameter in definition.params {
            if let value = params[parameter.name] ?? parameter.defaultValue {
                values[parameter.name] = value
            } else {
                problems.append("parameter `\(parameter.name)` has no default; give it with --param \(parameter.name)=VALUE")
            }
        }
        guard problems.isEmpty else { throw JobFarmError.invalidArgument(problems.joined(separator: "; ")) }
        let id = runID ?? JobID.make()
        guard JobID.isValid(id), id.utf8.count <= 48 else {
            throw JobFarmError.invalidArgument("run id '\(id)' must be 1–48 of A–Z a–z 0–9 - _ . : (its job ids add the step's id)")
        }
        let context = RunContext(runID: id, pipeline: definition.name, start: start,
                                 zone: zone ?? definition.schedule?.timeZone ?? TimeZone(identifier: "UTC")!, params: values)
        var queues: [String: JSONValue] = [:]
        var fanOut: [String: JSONValue] = [:]
        for step in definition.steps {
            queues[step.id] = .string(step.queue)
            if step.forEach != nil { fanOut[step.id] = .bool(true) }
        }
        let graph = JSONValue.array(pipeline.graph.steps.map { step in
            .object(["id": .string(step.id), "parents": .array(step.parents.map { .string($0) }),
                     "on_failure": .string(step.onFailure.rawValue), "trigger": .string(step.trigger.rawValue)])
        })
        let client = self.client
        let reply = try await runScript(Scripts.runCreate, runID: id, arguments: [
            definition.name, graph.jsonText, JSONValue.object(queues).jsonText, JSONValue.object(fanOut).jsonText,
            pipeline.source, definition.file, JSONValue.object(values).jsonText, context.date, context.time,
            String(Self.runRetention.milliseconds),
        ], on: client)
        let items = reply.array ?? []
        if items.first?.string == "duplicate" {
            return RunStart(runID: id, created: false, state: items.count > 1 ? items[1].string ?? "" : "")
        }
        let advance = try Self.advanceReply(RESPValue.array(Array(items.dropFirst())))
        _ = try? await client.send([RedisCommand("ZADD", runsIndex, String(WallClock.nowMilliseconds()), id)])
        let run = LoadedRun(id: id, pipeline: pipeline, params: values, date: context.date, time: context.time)
        PipelineCache.shared.remember(run, as: runPrefix(id))
        try await enqueueClaims(advance.claims, of: run, on: client)
        return RunStart(runID: id, created: true, state: advance.outcome.map(Self.runState) ?? "running")
    }

    /// The run's record: its state and every step's (nil when no such run exists, or it expired).
    public func runStatus(_ runID: String) async throws -> RunStatus? {
        let prefix = runPrefix(runID)
        let client = self.client
        let replies = try await retrying(for: .seconds(10), what: "run status") {
            try await client.send([RedisCommand("HGETALL", prefix + "run"), RedisCommand("HGETALL", prefix + "steps"),
                                   RedisCommand("HGETALL", prefix + "results")])
        }
        let run = Self.hash(replies[0]), steps = Self.hash(replies[1]), results = Self.hash(replies[2])
        guard !run.isEmpty, let graphText = run["graph"], let graph = try? JSONValue(parsing: graphText),
              case .array(let graphSteps) = graph
        else { return nil }
        var status = RunStatus(runID: runID, pipeline: run["pipeline"] ?? "", state: run["state"] ?? "",
                               created: run["created"].flatMap { Int64($0) }, ended: run["ended"].flatMap { Int64($0) },
                               stoppedBy: run["stopped_by"].flatMap { $0.isEmpty ? nil : $0 },
                               params: run["params"].flatMap { try? JSONValue(parsing: $0) }, steps: [])
        for entry in graphSteps {
            guard let id = entry["id"]?.stringValue else { continue }
            status.steps.append(RunStatus.Step(
                id: id, state: steps[id] ?? "waiting", job: steps[id + ":job"], queue: steps[id + ":queue"] ?? "default",
                started: steps[id + ":started"].flatMap { Int64($0) }, ended: steps[id + ":ended"].flatMap { Int64($0) },
                reason: steps[id + ":reason"], result: results[id].flatMap { try? JSONValue(parsing: $0) },
                items: steps[id + ":items"].flatMap { Int($0) }, endedItems: steps[id + ":ended_items"].flatMap { Int($0) }))
        }
        return status
    }

    /// Cancels a run: every waiting step is skipped and nothing more is enqueued; the running steps' jobs are
    /// cancelled (a running job at its worker's next heartbeat), and the run ends `cancelled` when their ends are
    /// applied.
    public func cancelRun(_ runID: String) async throws -> RunCancelOutcome {
        let client = self.client
        let reply = try await runScript(Scripts.runCancel, runID: runID, arguments: [], on: client).array ?? []
        switch reply.first?.string {
        case "unknown": return .notFound
        case "final": return .alreadyEnded(reply.count > 1 ? reply[1].string ?? "" : "")
        default: break
        }
        var jobs: [(queue: String, id: String)] = []
        for entry in reply.count > 1 ? reply[1].array ?? [] : [] {
            guard let fields = entry.array, fields.count >= 4, let job = fields[1].string, let queue = fields[2].string,
                  !job.isEmpty else { continue }
            let items = fields[3].int ?? -1
            if items >= 0 {
                jobs += (0..<items).map { (queue, "\(job).\($0)") }
            } else {
                jobs.append((queue, job))
            }
        }
        var ended: [String: [String]] = [:]
        for (queue, id) in jobs {
            if try await cancel(id: id, queue: queue) == .cancelled { ended[queue, default: []].append(id) }
        }
        // Jobs that were waiting in line ended now: apply their notices at once rather than at the next maintenance.
        for (queue, ids) in ended { await drainRunNotices(queue: queue, ids: ids, on: client) }
        if jobs.isEmpty {
            _ = try? await client.send([RedisCommand("ZREM", runsIndex, runID)])
        }
        return .cancelling(jobs: jobs.count)
    }

    // MARK: - Notices

    /// Applies the run notices of jobs just ended (the ids `complete`/`fail` said left one): the worker's drain right
    /// after its report. Failures are logged; the maintenance loop applies whatever is left after 5 s.
    func drainRunNotices(queue: String, ids: [String], on client: RedisClient) async {
        do {
            let data = keys(queue).prefix + "run-ends:data"
            let reply = try await client.send([RedisCommand(["HMGET", data] + ids)])[0]
            try await applyNotices(Array(zip(ids, (reply.array ?? []).map(\.string))), queue: queue, on: client)
        } catch {
            logger.warning("could not apply the run notices of ended pipeline jobs now; the maintenance loop applies them within seconds",
                           metadata: ["queue": "\(queue)", "error": "\(error)"])
        }
    }

    /// Applies the notices of one queue written more than `age` ago (left by a process that died before applying
    /// them, or written with no worker around: a cancel, a poison reap). Returns how many were applied.
    public func applyStaleRunNotices(queue: String, age: Duration = .seconds(5), limit: Int = 100, on client: RedisClient? = nil) async throws -> Int {
        let client = client ?? self.client
        let prefix = keys(queue).prefix
        let now = await estimatedServerMilliseconds() ?? WallClock.nowMilliseconds()
        // (The server clock estimate errs early by up to a round trip: `age` zero takes every notice.)
        let upTo = age <= .zero ? "+inf" : String(now - age.milliseconds)
        let ids = try await client.send([RedisCommand("ZRANGEBYSCORE", prefix + "run-ends", "-inf", upTo,
                                                      "LIMIT", "0", String(limit))])[0].array?.compactMap(\.string) ?? []
        if ids.isEmpty { return 0 }
        let reply = try await client.send([RedisCommand(["HMGET", prefix + "run-ends:data"] + ids)])[0]
        let notices = Array(zip(ids, (reply.array ?? []).map(\.string)))
        try await applyNotices(notices, queue: queue, on: client)
        return notices.filter { $0.1 != nil }.count
    }

    /// Applies notices of one queue, in order: each step's end state (`pass_when` evaluated here), every
    /// `runAdvance` in one pipeline, the enqueue of the steps they claimed, one touch per run, then the notices'
    /// removal in one `MULTI` (an id without a notice is only removed). Every part is idempotent, so two processes
    /// may apply one notice, and a failure part way leaves the notices for the next pass. A for_each step of N
    /// items thus costs about 3 round trips per report of up to a fetch batch of items, not 3 per item.
    func applyNotices(_ notices: [(String, String?)], queue: String, on client: RedisClient) async throws {
        if notices.isEmpty { return }
        let prefix = keys(queue).prefix
        var advances: [RunAdvance] = []
        for (id, text) in notices {
            guard let text else { continue }
            guard let notice = try? JSONValue(parsing: text), let runID = notice["run"]?.stringValue, let step = notice["step"]?.stringValue else {
                logger.error("dropped a run notice that is not what the scripts write", metadata: ["queue": "\(queue)", "job": "\(id)", "notice": "\(text.prefix(200))"])
                continue
            }
            let item = notice["item"]?.stringValue.flatMap { Int($0) }
            let end = RunNoticeEnd(state: notice["state"]?.stringValue ?? "", result: notice["result"]?.stringValue ?? "",
                                   error: notice["error"]?.stringValue ?? "", reason: notice["reason"]?.stringValue ?? "")
            if let advance = try await prepareAdvance(end, job: notice["job"]?.stringValue ?? id, runID: runID, step: step, item: item, on: client) {
                advances.append(advance)
            }
        }
        try await advanceRuns(advances, on: client)
        let ids = notices.map(\.0)
        _ = try await client.send([RedisCommand("MULTI"), RedisCommand(["ZREM", prefix + "run-ends"] + ids),
                                   RedisCommand(["HDEL", prefix + "run-ends:data"] + ids), RedisCommand("EXEC")])
    }

    /// How a job ended, as its notice (or, for the sweeper, its record) says.
    struct RunNoticeEnd {
        /// `succeeded`, `dead` or `cancelled`.
        var state: String
        var result: String
        var error: String
        var reason: String
    }

    /// A `runAdvance` call for one job's end, with the run it advances.
    typealias RunAdvance = (run: LoadedRun, request: RedisRequest)

    /// The `runAdvance` call for a job's end (its step's end state decided here); nil for a run or step that no
    /// longer exists.
    func prepareAdvance(_ end: RunNoticeEnd, job: String, runID: String, step: String, item: Int?, on client: RedisClient) async throws -> RunAdvance? {
        guard let run = try await loadRun(runID, on: client), let definition = run.pipeline.step(step) else { return nil }
        let (state, result, reason) = Self.endState(end, of: definition, params: run.params)
        return (run, .script(Scripts.runAdvance, keys: [runPrefix(runID)], arguments: [
            runID, job, step, item.map(String.init) ?? "", state, result, reason,
        ]))
    }

    /// Runs the `runAdvance` calls in one pipeline, enqueues the steps they claimed, and touches each run once
    /// (`jf:runs`: removed when it ended, else its time renewed).
    func advanceRuns(_ advances: [RunAdvance], on client: RedisClient) async throws {
        if advances.isEmpty { return }
        let replies = try await retrying(for: .seconds(10), what: Scripts.runAdvance.name) {
            try await client.pipeline(advances.map(\.request))
        }
        var ended: [String: Bool] = [:]
        for ((run, _), reply) in zip(advances, replies) {
            let advance = try Self.advanceReply(reply)
            if advance.gone { continue }
            try await enqueueClaims(advance.claims, of: run, on: client)
            ended[run.id] = (ended[run.id] ?? false) || advance.outcome != nil
        }
        if ended.isEmpty { return }
        _ = try await client.send(ended.map { runID, done in
            done ? RedisCommand("ZREM", runsIndex, runID)
                 : RedisCommand("ZADD", runsIndex, "XX", String(WallClock.nowMilliseconds()), runID)
        })
    }

    /// Applies one job's end to its run outside a notice (the sweeper).
    func applyEnd(_ end: RunNoticeEnd, job: String, runID: String, step: String, item: Int?, on client: RedisClient) async throws {
        guard let advance = try await prepareAdvance(end, job: job, runID: runID, step: step, item: item, on: client) else { return }
        try await advanceRuns([advance], on: client)
    }

    /// The step's end state, result and reason for `runAdvance`: `pass_when` decides a succeeded job's.
    static func endState(_ end: RunNoticeEnd, of definition: StepDefinition, params: [String: JSONValue]) -> (state: String, result: String, reason: String) {
        switch end.state {
        case "succeeded":
            let value = (try? JSONValue(parsing: end.result)) ?? .null
            let (passed, why) = definition.endState(ofSucceededResult: value, params: params)
            return (passed.rawValue, end.result.isEmpty ? "null" : end.result, why ?? "")
        case "cancelled":
            return ("cancelled", "", "cancelled")
        default:
            return ("failed", "", end.reason.isEmpty ? end.error : "\(end.reason): \(end.error)")
        }
    }

    // MARK: - Sweeper

    /// The run sweeper, for runs quiet for `quiet`: re-enqueues a running step whose job does not exist (its claim was
    /// made by a process that died before the enqueue), and applies the end of a step whose job ended without a
    /// notice left to apply. Returns the number of runs looked at.
    public func sweepRuns(quiet: Duration = .seconds(30), limit: Int = 20, on client: RedisClient? = nil) async throws -> Int {
        let client = client ?? self.client
        let now = WallClock.nowMilliseconds()
        let ids = try await client.send([RedisCommand("ZRANGEBYSCORE", runsIndex, "-inf", String(now - quiet.milliseconds),
                                                      "LIMIT", "0", String(limit))])[0].array?.compactMap(\.string) ?? []
        for runID in ids {
            guard let run = try await loadRun(runID, on: client), let status = try await runStatus(runID), !status.isFinal else {
                _ = try await client.send([RedisCommand("ZREM", runsIndex, runID)])
                continue
            }
            for step in status.steps where step.state == "running" {
                guard let job = step.job else { continue }
                let claim = RunClaim(step: step.id, job: job, queue: step.queue, forEach: run.pipeline.step(step.id)?.forEach != nil)
                if claim.forEach {
                    guard let items = step.items else {
                        try await enqueueClaims([claim], of: run, on: client)
                        continue
                    }
                    let states = try await client.send([RedisCommand(["HMGET", runPrefix(runID) + "steps"] + (0..<items).map { "\(step.id):\($0)" })])[0].array ?? []
                    for index in 0..<items where index < states.count && states[index].isNull {
                        if try await sweepJob("\(job).\(index)", queue: step.queue, runID: runID, step: step.id, item: index, on: client) {
                            try await enqueueClaims([claim], of: run, on: client)
                            break
                        }
                    }
                } else if try await sweepJob(job, queue: step.queue, runID: runID, step: step.id, item: nil, on: client) {
                    try await enqueueClaims([claim], of: run, on: client)
                }
            }
            try await touchRun(runID, ended: false, on: client)
        }
        return ids.count
    }

    /// One running step's job, for the sweeper: true when it does not exist (to enqueue again); a job that ended
    /// with no notice left has its end applied here.
    private func sweepJob(_ id: String, queue: String, runID: String, step: String, item: Int?, on client: RedisClient) async throws -> Bool {
        let queueKeys = keys(queue)
        let replies = try await client.send([
            RedisCommand("HMGET", queueKeys.job(id), "state", "result", "error", "reason"),
            RedisCommand("HEXISTS", queueKeys.pending, id),
            RedisCommand("ZSCORE", queueKeys.prefix + "run-ends", id),
        ])
        let fields = replies[0].array ?? []
        let state = fields.first?.string
        if state == nil { return (replies[1].int ?? 0) == 0 }
        guard replies[2].isNull, let state, ["succeeded", "dead", "cancelled"].contains(state) else { return false }
        let end = RunNoticeEnd(state: state, result: fields.count > 1 ? fields[1].string ?? "" : "",
                               error: fields.count > 2 ? fields[2].string ?? "" : "", reason: fields.count > 3 ? fields[3].string ?? "" : "")
        try await applyEnd(end, job: id, runID: runID, step: step, item: item, on: client)
        return false
    }

    // MARK: - Claims

    /// A step the run scripts moved to `running`: its job is to be enqueued with this id.
    struct RunClaim: Sendable, Equatable {
        var step: String
        var job: String
        var queue: String
        var forEach: Bool
    }

    /// The reply of `runAdvance`, `runItems` and `runCreate` (after its first item).
    struct AdvanceReply {
        var claims: [RunClaim] = []
        var skipped: [String] = []
        var stoppedBy: String?
        /// `succeeded`, `failed:<step>` or `cancelled` when the run ended.
        var outcome: String?
        /// The run no longer exists.
        var gone = false
    }

    static func advanceReply(_ value: RESPValue) throws -> AdvanceReply {
        if let message = value.errorMessage { throw JobFarmError(reply: message, script: "runAdvance") }
        let items = value.array ?? []
        if items.first?.string == "gone" { return AdvanceReply(gone: true) }
        guard items.count >= 4 else {
            throw JobFarmError.redisFailed(operation: "run", cause: .unexpectedReply("expected {claims, skipped, stopped_by, outcome}"))
        }
        var reply = AdvanceReply()
        for entry in items[0].array ?? [] {
            guard let fields = entry.array, fields.count >= 4, let step = fields[0].string, let job = fields[1].string else { continue }
            reply.claims.append(RunClaim(step: step, job: job, queue: fields[2].string ?? "default", forEach: fields[3].int == 1))
        }
        reply.skipped = items[1].array?.compactMap(\.string) ?? []
        reply.stoppedBy = items[2].string.flatMap { $0.isEmpty ? nil : $0 }
        reply.outcome = items[3].string.flatMap { $0.isEmpty ? nil : $0 }
        return reply
    }

    /// `failed:<step>` → `failed`.
    static func runState(_ outcome: String) -> String { String(outcome.prefix { $0 != ":" }) }

    /// Builds and enqueues the jobs of claimed steps: payloads resolved from the run's parameters and the results
    /// copied into its record; a `for_each` step's list resolved and recorded (`runItems`) first. A payload that
    /// cannot be built fails its step (a `runAdvance` under the step's job id, as idempotent as a real end), which
    /// may claim more steps: those are built in the same call.
    func enqueueClaims(_ claims: [RunClaim], of run: LoadedRun, on client: RedisClient) async throws {
        var pending = claims
        var requests: [EnqueueRequest] = []
        var results: [String: JSONValue] = [:]
        func fail(_ job: String, step: String, item: Int?, reason: String) async throws {
            let advance = try Self.advanceReply(try await runScript(Scripts.runAdvance, runID: run.id, arguments: [
                job, step, item.map(String.init) ?? "", "failed", "", reason,
            ], on: client))
            pending += advance.claims
            if advance.outcome != nil { try await touchRun(run.id, ended: true, on: client) }
        }
        while !pending.isEmpty {
            let claim = pending.removeFirst()
            guard let step = run.pipeline.step(claim.step) else { continue }
            // Only the results this step's templates read (one HMGET; none for a step that reads no result).
            let needed = Self.resultsRead(by: step).filter { results[$0] == nil }
            if !needed.isEmpty { results.merge(try await runResults(run.id, steps: needed, on: client)) { $1 } }
            var context = RunContext(runID: run.id, pipeline: run.pipeline.definition.name, date: run.date, time: run.time,
                                     params: run.params, results: results)
            let tier = step.tier ?? run.pipeline.definition.tier
            if let tier, !configuration.tiers.contains(tier) {
                try await fail(claim.job, step: claim.step, item: nil, reason: "tier '\(tier)' is not one of this farm's tiers (\(configuration.tiers.joined(separator: ", ")))")
                continue
            }
            func request(_ payload: JSONValue, id: String, item: Int?) -> EnqueueRequest {
                var request = EnqueueRequest(kind: step.kind, queue: claim.queue, tier: tier, payload: payload,
                                             maxAttempts: step.maxAttempts ?? 5, timeout: step.timeout ?? .seconds(300), id: id)
                request.links = JobLinks(run: run.id, step: step.id, item: item)
                return request
            }
            if claim.forEach {
                let items: [JSONValue]
                do {
                    items = try step.items(in: context) ?? []
                } catch {
                    try await fail(claim.job, step: claim.step, item: nil, reason: "template: \(error)")
                    continue
                }
                let recorded = try Self.advanceReply(try await runScript(Scripts.runItems, runID: run.id, arguments: [claim.step, String(items.count)], on: client))
                pending += recorded.claims
                if recorded.outcome != nil { try await touchRun(run.id, ended: true, on: client) }
                for (index, item) in items.enumerated() {
                    context.item = item
                    do {
                        requests.append(request(try step.payload(in: context), id: "\(claim.job).\(index)", item: index))
                    } catch {
                        try await fail("\(claim.job).\(index)", step: claim.step, item: index, reason: "template: \(error)")
                    }
                }
            } else {
                do {
                    requests.append(request(try step.payload(in: context), id: claim.job, item: nil))
                } catch {
                    try await fail(claim.job, step: claim.step, item: nil, reason: "template: \(error)")
                }
            }
        }
        if !requests.isEmpty { _ = try await enqueue(requests) }
    }

    // MARK: - The run record

    /// What applying a notice needs of a run: its definition (validated again from the text in its record, cached
    /// per text), parameters and date.
    struct LoadedRun: Sendable {
        var id: String
        var pipeline: ValidatedPipeline
        var params: [String: JSONValue]
        var date: String
        var time: String
        var state: String = "running"
    }

    func loadRun(_ runID: String, on client: RedisClient) async throws -> LoadedRun? {
        // A run's definition, parameters and date never change: read once per process (the state is not used here).
        if let known = PipelineCache.shared.run(runPrefix(runID)) { return known }
        let reply = try await client.send([RedisCommand("HMGET", runPrefix(runID) + "run", "definition", "file", "params", "date", "time", "state")])[0]
        let fields = (reply.array ?? []).map(\.string)
        guard fields.count == 6, let source = fields[0] else { return nil }
        let pipeline: ValidatedPipeline
        if let cached = PipelineCache.shared.get(source) {
            pipeline = cached
        } else {
            do {
                pipeline = try ValidatedPipeline.validate(yaml: source, file: fields[1] ?? "pipeline.yaml", knownKinds: nil)
            } catch {
                logger.error("the run's pipeline definition no longer validates; the run cannot advance", metadata: ["run": "\(runID)", "error": "\(error)"])
                return nil
            }
            PipelineCache.shared.put(source, pipeline)
        }
        var params: [String: JSONValue] = [:]
        if let text = fields[2], case .object(let values)? = try? JSONValue(parsing: text) { params = values }
        let run = LoadedRun(id: runID, pipeline: pipeline, params: params, date: fields[3] ?? "", time: fields[4] ?? "", state: fields[5] ?? "")
        PipelineCache.shared.remember(run, as: runPrefix(runID))
        return run
    }

    /// Some steps' results as copied into the run (a step without one is left out).
    func runResults(_ runID: String, steps: [String], on client: RedisClient) async throws -> [String: JSONValue] {
        let reply = try await client.send([RedisCommand(["HMGET", runPrefix(runID) + "results"] + steps)])[0]
        var results: [String: JSONValue] = [:]
        for (step, text) in zip(steps, reply.array ?? []) {
            if let text = text.string, let value = try? JSONValue(parsing: text) { results[step] = value }
        }
        return results
    }

    /// The steps whose results a step's payload and `for_each` read.
    static func resultsRead(by step: StepDefinition) -> [String] {
        var references = step.payload.references.map(\.0)
        switch step.forEach {
        case .list(let items): references += items.flatMap(\.references).map(\.0)
        case .template(let reference, _): references.append(reference)
        case nil: break
        }
        var steps: [String] = []
        for reference in references {
            if case .stepResult(let id, _) = reference, !steps.contains(id) { steps.append(id) }
        }
        return steps
    }

    /// Marks a run as changed now in the sweeper's list, or takes it off once it ended.
    func touchRun(_ runID: String, ended: Bool, on client: RedisClient) async throws {
        if ended {
            _ = try await client.send([RedisCommand("ZREM", runsIndex, runID)])
        } else {
            _ = try await client.send([RedisCommand("ZADD", runsIndex, "XX", String(WallClock.nowMilliseconds()), runID)])
        }
    }

    func runScript(_ script: RedisScript, runID: String, arguments: [String], on client: RedisClient) async throws -> RESPValue {
        let keys = [runPrefix(runID)]
        let reply = try await retrying(for: .seconds(10), what: script.name) {
            try await client.run(script, keys: keys, arguments: [runID] + arguments)
        }
        if let message = reply.errorMessage { throw JobFarmError(reply: message, script: script.name) }
        return reply
    }

    static func hash(_ reply: RESPValue) -> [String: String] {
        let items = reply.array ?? []
        var out: [String: String] = [:]
        var index = 0
        while index + 1 < items.count {
            if let key = items[index].string, let value = items[index + 1].string { out[key] = value }
            index += 2
        }
        return out
    }
}

/// Validated pipeline definitions by their text: a notice is applied many times per run, and validating the YAML
/// each time would cost more than the rest.
final class PipelineCache: Sendable {
    static let shared = PipelineCache()
    private let store = Mutex<[String: ValidatedPipeline]>([:])
    private let runs = Mutex<[String: JobFarm.LoadedRun]>([:])

    /// A run read before, by its key prefix (namespace and id).
    func run(_ key: String) -> JobFarm.LoadedRun? { runs.withLock { $0[key] } }

    func remember(_ run: JobFarm.LoadedRun, as key: String) {
        runs.withLock {
            if $0.count >= 1024 { $0.removeAll() }
            $0[key] = run
        }
    }

    func get(_ source: String) -> ValidatedPipeline? { store.withLock { $0[source] } }

    func put(_ source: String, _ pipeline: ValidatedPipeline) {
        store.withLock {
            if $0.count >= 64 { $0.removeAll() }
            $0[source] = pipeline
        }
    }
}
