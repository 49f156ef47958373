import Foundation
import JobProtocol
import Yams

/// `jobs/schedules.yaml`: named cron schedules, each firing a pipeline or a job.
public struct ScheduleFile: Sendable {
    /// What a schedule fires.
    public enum Target: Sendable {
        /// A pipeline file (a path relative to the schedule file's folder, as written) with parameters.
        case pipeline(path: String, params: [String: JSONValue])
        /// One job.
        case job(kind: String, queue: String, tier: String?, payload: JSONValue)
    }

    /// One schedule.
    public struct Entry: Sendable {
        public var name: String
        public var schedule: CronSchedule
        public var target: Target
        public var location: SourceLocation
    }

    public var file: String
    public var entries: [Entry]

    /// The keys of one schedule.
    public static let entryKeys = ["name", "cron", "timezone", "missed", "grace", "pipeline", "params", "job"]
    /// The keys of a schedule's `job`.
    public static let jobKeys = ["kind", "queue", "tier", "payload"]

    /// Reads and checks a schedule file; `knownKinds` checks the kinds of `job` targets (nil: any).
    public static func load(path: String, knownKinds: Set<String>?) throws(DefinitionErrors) -> ScheduleFile {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw DefinitionErrors([DefinitionError(.missingKey, at: SourceLocation(file: path, line: 1, column: 1, key: ""), "cannot read the file as UTF-8 text; check the path")])
        }
        return try parse(yaml: text, file: path, knownKinds: knownKinds)
    }

    /// Parses and checks YAML text; every error found is thrown together.
    public static func parse(yaml: String, file: String, knownKinds: Set<String>?) throws(DefinitionErrors) -> ScheduleFile {
        var document = YAMLDocument(file: file)
        guard let root = document.compose(yaml) else { throw DefinitionErrors(document.errors) }
        var entries: [Entry] = []
        if let pairs = document.mapping(root, key: "", allowed: ["schedules"], what: "a schedule file") {
            if case let (_, node, location)? = pairs.first(where: { $0.key == "schedules" }) {
                if case .sequence(let items) = node {
                    var names: [String: Int] = [:]
                    for (index, item) in items.enumerated() {
                        guard let entry = parseEntry(item, key: "schedules[\(index)]", knownKinds: knownKinds, document: &document) else { continue }
                        if let line = names[entry.name] {
                            document.record(.duplicateID, at: entry.location, "schedule name `\(entry.name)` is used twice (first at line \(line)); give each its own")
                            continue
                        }
                        names[entry.name] = entry.location.line
                        entries.append(entry)
                    }
                } else {
                    document.record(.wrongType, at: location, "`schedules` must be a list of schedules")
                }
            } else {
                document.record(.missingKey, at: document.location(of: root, key: ""), "the file has no `schedules` list")
            }
        }
        guard document.errors.isEmpty else { throw DefinitionErrors(document.errors) }
        return ScheduleFile(file: file, entries: entries)
    }

    static func parseEntry(_ node: Node, key: String, knownKinds: Set<String>?, document: inout YAMLDocument) -> Entry? {
        guard let pairs = document.mapping(node, key: key, allowed: entryKeys, what: "a schedule") else { return nil }
        let location = document.location(of: node, key: key)
        var name: String?
        var cron: CronExpression?
        var zone = TimeZone(identifier: "UTC")!
        var missed = MissedRunPolicy.skip
        var grace = Duration.seconds(300)
        var pipeline: String?
        var params: [String: JSONValue] = [:]
        var job: Target?
        let errorsBefore = document.errors.count
        for (field, value, at) in pairs {
            switch field {
            case "name":
                if let text = document.string(value, key: at.key, what: "`name`") {
                    if PipelineDefinition.isValidID(text) { name = text } else {
                        document.record(.invalidValue, at: at, "schedule name `\(text)` must be 1–64 of A–Z a–z 0–9 _ -")
                    }
                }
            case "cron":
                if let text = document.string(value, key: at.key, what: "`cron`") {
                    cron = PipelineDefinition.parseCron(text, node: value, key: at.key, document: &document)
                }
            case "timezone":
                if let identifier = document.string(value, key: at.key, what: "`timezone`") {
                    if let found = CronExpression.timeZone(named: identifier) { zone = found } else {
                        document.record(.unknownTimeZone, at: at, "`\(identifier)` is not a time zone of the IANA database (e.g. UTC, Europe/Berlin, America/New_York)")
                    }
                }
            case "missed":
                if let policy = PipelineDefinition.parseEnum(value, key: at.key, as: MissedRunPolicy.self, document: &document) { missed = policy }
            case "grace":
                if let value = document.duration(value, key: at.key, what: "`grace`") { grace = value }
            case "pipeline": pipeline = document.string(value, key: at.key, what: "`pipeline`")
            case "params":
                if case .object(let object)? = document.json(value, key: at.key) { params = object } else if case .mapping = value {} else {
                    document.record(.wrongType, at: at, "`params` must be a mapping of name: value")
                }
            case "job": job = parseJob(value, key: at.key, knownKinds: knownKinds, document: &document)
            default: break
            }
        }
        if name == nil, !pairs.contains(where: { $0.key == "name" }) { document.record(.missingKey, at: location, "the schedule has no `name`") }
        if cron == nil, !pairs.contains(where: { $0.key == "cron" }) { document.record(.missingKey, at: location, "the schedule has no `cron` (e.g. `cron: \"0 2 * * *\"`)") }
        let hasPipeline = pairs.contains { $0.key == "pipeline" }, hasJob = pairs.contains { $0.key == "job" }
        if hasPipeline == hasJob {
            document.record(.missingKey, at: location, "a schedule fires either a `pipeline` (a file) or a `job` (kind, queue, payload); give exactly one")
        }
        if hasJob, !params.isEmpty { document.record(.invalidValue, at: location, "`params` go with a `pipeline`, not a `job`") }
        guard document.errors.count == errorsBefore, let name, let cron else { return nil }
        let target: Target
        if let pipeline { target = .pipeline(path: pipeline, params: params) } else if let job { target = job } else { return nil }
        return Entry(name: name, schedule: CronSchedule(cron: cron, timeZone: zone, missed: missed, grace: grace, location: location), target: target, location: location)
    }

    static func parseJob(_ node: Node, key: String, knownKinds: Set<String>?, document: inout YAMLDocument) -> Target? {
        guard let pairs = document.mapping(node, key: key, allowed: jobKeys, what: "a schedule's `job`") else { return nil }
        var kind: String?, queue = "default", tier: String?, payload = JSONValue.null
        for (field, value, at) in pairs {
            switch field {
            case "kind":
                kind = document.string(value, key: at.key, what: "`kind`")
                if let kind, let knownKinds, !knownKinds.contains(kind) {
                    document.record(.unknownKind, at: at, "unknown job kind `\(kind)`; this farm runs: \(knownKinds.sorted().joined(separator: ", "))")
                }
            case "queue":
                if let text = document.string(value, key: at.key, what: "`queue`") {
                    if QueueKeys.isValidName(text) { queue = text } else {
                        document.record(.invalidValue, at: at, "queue name `\(text)` must be 1–64 of A–Z a–z 0–9 _ - .")
                    }
                }
            case "tier": tier = PipelineDefinition.parseTier(value, key: at.key, document: &document)
            case "payload": payload = document.json(value, key: at.key) ?? .null
            default: break
            }
        }
        guard let kind else {
            document.record(.missingKey, at: document.location(of: node, key: key), "the `job` has no `kind`")
            return nil
        }
        return .job(kind: kind, queue: queue, tier: tier, payload: payload)
    }
}
