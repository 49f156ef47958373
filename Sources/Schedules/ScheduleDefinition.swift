import Crypto
import Foundation
import JobProtocol
import Pipelines

/// One schedule as the farm stores it (`<ns>:schedules[<name>]`, JSON): what fires, when, and what to do about
/// firings the farm missed. `version` names the definition's content: a changed schedule gets a new version, and
/// the firing jobs of the old one do nothing when they run.
public struct ScheduleDefinition: Sendable, Equatable {
    /// What a schedule fires.
    public enum Target: Sendable, Equatable {
        /// One job.
        case job(kind: String, queue: String, tier: String?, payload: JSONValue)
        /// A pipeline run: the pipeline file's text (so any worker can fire it, wherever the file is), as read from
        /// `file`, with parameters; `queue`/`tier` are the pipeline's, where the firing jobs go.
        case pipeline(file: String, source: String, params: [String: JSONValue], queue: String, tier: String?)
    }

    /// 1–64 of `A–Z a–z 0–9 _ -`.
    public var name: String
    /// The cron expression as written.
    public var cron: String
    /// IANA name of the time zone.
    public var timeZone: String
    public var missed: MissedRunPolicy
    /// How late a firing still counts as on time, in milliseconds.
    public var graceMilliseconds: Int64
    public var target: Target
    /// Where the schedule came from: `cli` (`schedule add`) or the file `schedule sync` read it from (a later sync
    /// of that file removes it when the file no longer declares it).
    public var origin: String

    public init(name: String, cron: String, timeZone: String = "UTC", missed: MissedRunPolicy = .skip,
                grace: Duration = .seconds(300), target: Target, origin: String = "cli") {
        self.name = name
        self.cron = cron
        self.timeZone = timeZone
        self.missed = missed
        self.graceMilliseconds = grace.components.seconds * 1000 + grace.components.attoseconds / 1_000_000_000_000_000
        self.target = target
        self.origin = origin
    }

    /// A schedule name: 1–64 of `A–Z a–z 0–9 _ -` (it is part of job ids).
    public static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5a).contains(byte) || (0x61...0x7a).contains(byte) || byte == 0x5f || byte == 0x2d
        }
    }

    /// The queue the firing jobs go to (the target's).
    public var queue: String {
        switch target {
        case .job(_, let queue, _, _), .pipeline(_, _, _, let queue, _): return queue
        }
    }

    /// The tier of the firing jobs (`nil`: the farm's default).
    public var tier: String? {
        switch target {
        case .job(_, _, let tier, _), .pipeline(_, _, _, _, let tier): return tier
        }
    }

    /// The definition's content as JSON, without `version` and `origin`.
    var content: JSONValue {
        var object: [String: JSONValue] = [
            "name": .string(name), "cron": .string(cron), "timezone": .string(timeZone),
            "missed": .string(missed.rawValue), "grace_ms": .number(Double(graceMilliseconds)),
        ]
        switch target {
        case .job(let kind, let queue, let tier, let payload):
            var job: [String: JSONValue] = ["kind": .string(kind), "queue": .string(queue), "payload": payload]
            if let tier { job["tier"] = .string(tier) }
            object["job"] = .object(job)
        case .pipeline(let file, let source, let params, let queue, let tier):
            var pipeline: [String: JSONValue] = [
                "file": .string(file), "source": .string(source), "params": .object(params), "queue": .string(queue),
            ]
            if let tier { pipeline["tier"] = .string(tier) }
            object["pipeline"] = .object(pipeline)
        }
        return .object(object)
    }

    /// The first 12 hex digits of SHA-256 of the content's JSON (keys sorted): equal definitions, equal versions.
    public var version: String {
        let digest = SHA256.hash(data: Array(content.jsonText.utf8))
        return digest.prefix(6).map { String(format: "%02x", $0) }.joined()
    }

    /// The stored JSON: the content, `version` and `origin`.
    public var json: String {
        guard case .object(var object) = content else { return "{}" }
        object["version"] = .string(version)
        object["origin"] = .string(origin)
        return JSONValue.object(object).jsonText
    }

    /// Reads a stored definition; the error says what is wrong with it.
    public init(json text: String) throws(ScheduleError) {
        guard let value = try? JSONValue(parsing: text), case .object(let object) = value else {
            throw ScheduleError("the stored definition is not a JSON object; run `jobfarm schedule remove` and add it again")
        }
        func string(_ key: String) throws(ScheduleError) -> String {
            guard let text = object[key]?.stringValue else { throw ScheduleError("the stored definition has no `\(key)`; add the schedule again") }
            return text
        }
        name = try string("name")
        cron = try string("cron")
        timeZone = try string("timezone")
        guard let policy = MissedRunPolicy(rawValue: try string("missed")) else { throw ScheduleError("`missed` is not skip or catch_up_once") }
        missed = policy
        guard case .number(let grace)? = object["grace_ms"], grace >= 0 else { throw ScheduleError("the stored definition has no `grace_ms`") }
        graceMilliseconds = Int64(grace)
        origin = object["origin"]?.stringValue ?? "cli"
        if case .object(let job)? = object["job"] {
            guard let kind = job["kind"]?.stringValue, let queue = job["queue"]?.stringValue else {
                throw ScheduleError("the stored `job` has no kind or queue")
            }
            target = .job(kind: kind, queue: queue, tier: job["tier"]?.stringValue, payload: job["payload"] ?? .null)
        } else if case .object(let pipeline)? = object["pipeline"] {
            guard let file = pipeline["file"]?.stringValue, let source = pipeline["source"]?.stringValue,
                  let queue = pipeline["queue"]?.stringValue else {
                throw ScheduleError("the stored `pipeline` has no file, source or queue")
            }
            var params: [String: JSONValue] = [:]
            if case .object(let given)? = pipeline["params"] { params = given }
            target = .pipeline(file: file, source: source, params: params, queue: queue, tier: pipeline["tier"]?.stringValue)
        } else {
            throw ScheduleError("the stored definition has neither `job` nor `pipeline`")
        }
    }

    /// The cron expression in its time zone, with the missed-run policy.
    public func cronSchedule() throws(ScheduleError) -> CronSchedule {
        let expression: CronExpression
        do {
            expression = try CronExpression(parsing: cron)
        } catch {
            throw ScheduleError("cron `\(cron)`: \(error)")
        }
        guard let zone = CronExpression.timeZone(named: timeZone) else {
            throw ScheduleError("`\(timeZone)` is not a time zone of this machine's IANA database (install tzdata)")
        }
        return CronSchedule(cron: expression, timeZone: zone, missed: missed, grace: .milliseconds(graceMilliseconds))
    }

    /// The schedules of a schedule file (`jobs/schedules.yaml`), their pipeline files read relative to it.
    public static func definitions(in file: ScheduleFile, knownKinds: Set<String>?) throws(ScheduleError) -> [ScheduleDefinition] {
        var definitions: [ScheduleDefinition] = []
        // Relative to the schedule file's folder, kept relative when the schedule file's path is (the stored
        // `file` names the pipeline; its text is stored too).
        let folder = file.file.lastIndex(of: "/").map { String(file.file[...$0]) } ?? ""
        for entry in file.entries {
            let target: Target
            switch entry.target {
            case .job(let kind, let queue, let tier, let payload):
                target = .job(kind: kind, queue: queue, tier: tier, payload: payload)
            case .pipeline(let path, let params):
                let resolved = path.hasPrefix("/") ? path : folder + path
                target = try pipelineTarget(path: resolved, params: params, knownKinds: knownKinds, at: "\(entry.location): schedule `\(entry.name)`")
            }
            definitions.append(ScheduleDefinition(
                name: entry.name, cron: entry.schedule.cron.source, timeZone: entry.schedule.timeZoneName,
                missed: entry.schedule.missed, grace: entry.schedule.grace, target: target, origin: file.file))
        }
        return definitions
    }

    /// The schedule a pipeline file declares with its own `schedule:` key (named after the pipeline), if any.
    public static func definition(ofPipelineAt path: String, knownKinds: Set<String>?) throws(ScheduleError) -> ScheduleDefinition? {
        let target = try pipelineTarget(path: path, params: [:], knownKinds: knownKinds, at: path)
        guard case .pipeline(_, let source, _, _, _) = target else { return nil }
        let pipeline: ValidatedPipeline
        do { pipeline = try ValidatedPipeline.validate(yaml: source, file: path, knownKinds: knownKinds) } catch { throw ScheduleError("\(error)") }
        guard let schedule = pipeline.definition.schedule else { return nil }
        return ScheduleDefinition(
            name: pipeline.definition.name, cron: schedule.cron.source, timeZone: schedule.timeZoneName, missed: schedule.missed,
            grace: schedule.grace, target: target, origin: path)
    }

    /// A pipeline file as a target: read and validated now, its text kept.
    public static func pipelineTarget(path: String, params: [String: JSONValue], knownKinds: Set<String>?, at place: String) throws(ScheduleError) -> Target {
        guard let data = FileManager.default.contents(atPath: path), let source = String(data: data, encoding: .utf8) else {
            throw ScheduleError("\(place): cannot read the pipeline file \(path); check the path")
        }
        let pipeline: ValidatedPipeline
        do {
            pipeline = try ValidatedPipeline.validate(yaml: source, file: path, knownKinds: knownKinds)
        } catch {
            throw ScheduleError("\(place): the pipeline file \(path) has errors:\n\(error)")
        }
        do {
            _ = try pipeline.parameters(given: params.mapValues(\.jsonText))
        } catch {
            throw ScheduleError("\(place): \(error)")
        }
        return .pipeline(file: path, source: source, params: params, queue: pipeline.definition.queue, tier: pipeline.definition.tier)
    }
}

/// A schedule that cannot be stored, read or fired, with what to do.
public struct ScheduleError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
