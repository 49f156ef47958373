import Foundation
import JobProtocol
import Yams

extension PipelineDefinition {
    /// Parses a pipeline file. Returns the definition when it could be read (it may still have errors, all of
    /// which are returned, each naming file, line and key); `ValidatedPipeline` checks the graph on top.
    public static func parse(yaml text: String, file: String) -> (definition: PipelineDefinition?, errors: [DefinitionError]) {
        var document = YAMLDocument(file: file)
        guard let root = document.compose(text) else { return (nil, document.errors) }
        let definition = parse(root: root, document: &document)
        return (definition, document.errors)
    }

    static func parse(root: Node, document: inout YAMLDocument) -> PipelineDefinition? {
        guard let pairs = document.mapping(root, key: "", allowed: keys, what: "a pipeline file") else { return nil }
        let rootLocation = document.location(of: root, key: "")
        var definition = PipelineDefinition(file: document.file, name: "", description: nil, schedule: nil, queue: "default",
                                            tier: nil, onFailure: .stop, params: [], steps: [])
        var stepsNode: (Node, SourceLocation)?
        var sawName = false
        for (key, value, location) in pairs {
            switch key {
            case "name":
                if let name = document.string(value, key: key, what: "`name`") {
                    if isValidID(name) { definition.name = name; sawName = true } else {
                        document.record(.invalidValue, at: location, "`name` must be 1–64 of A–Z a–z 0–9 _ - (got `\(name)`)")
                    }
                }
            case "description": definition.description = document.string(value, key: key, what: "`description`")
            case "schedule": definition.schedule = parseSchedule(value, key: key, document: &document)
            case "queue":
                if let queue = document.string(value, key: key, what: "`queue`") {
                    if QueueKeys.isValidName(queue) { definition.queue = queue } else {
                        document.record(.invalidValue, at: location, "queue name `\(queue)` must be 1–64 of A–Z a–z 0–9 _ - .")
                    }
                }
            case "tier": definition.tier = parseTier(value, key: key, document: &document)
            case "on_failure":
                if let policy = parseEnum(value, key: key, as: FailurePolicy.self, document: &document) { definition.onFailure = policy }
            case "params": definition.params = parseParams(value, key: key, document: &document)
            case "steps": stepsNode = (value, location)
            default: break
            }
        }
        if !sawName, !pairs.contains(where: { $0.key == "name" }) {
            document.record(.missingKey, at: rootLocation, "the pipeline has no `name`; add `name: my-pipeline`")
        }
        guard case let (node, location)? = stepsNode else {
            document.record(.missingKey, at: rootLocation, "the pipeline has no `steps`; add a list of steps (each with `id` and `kind`)")
            return definition
        }
        guard case .sequence(let sequence) = node, !sequence.isEmpty else {
            document.record(.wrongType, at: location, "`steps` must be a non-empty list of steps; got \(YAMLDocument.describe(node))")
            return definition
        }
        for (index, stepNode) in sequence.enumerated() {
            if let step = parseStep(stepNode, key: "steps[\(index)]", defaults: definition, document: &document) {
                definition.steps.append(step)
            }
        }
        return definition
    }

    static func isValidID(_ text: String) -> Bool {
        (1...64).contains(text.utf8.count) && text.allSatisfy(TemplateParser.isNameCharacter)
    }

    static func parseTier(_ node: Node, key: String, document: inout YAMLDocument) -> String? {
        guard let tier = document.string(node, key: key, what: "`tier`") else { return nil }
        guard QueueKeys.isValidName(tier) else {
            document.record(.invalidValue, at: document.location(of: node, key: key), "tier `\(tier)` must be 1–64 of A–Z a–z 0–9 _ - .")
            return nil
        }
        return tier
    }

    static func parseEnum<T: RawRepresentable & CaseIterable>(_ node: Node, key: String, as type: T.Type, document: inout YAMLDocument) -> T? where T.RawValue == String {
        let allowed = T.allCases.map(\.rawValue)
        guard let text = document.string(node, key: key, what: "`\(key.split(separator: ".").last ?? "")`") else { return nil }
        guard let value = T(rawValue: text) else {
            document.record(.invalidValue, at: document.location(of: node, key: key), "`\(text)` is not one of \(allowed.joined(separator: ", "))")
            return nil
        }
        return value
    }

    static func parseParams(_ node: Node, key: String, document: inout YAMLDocument) -> [PipelineParameter] {
        guard let pairs = document.freeMapping(node, key: key, what: "`params` (name: default value, `~` for a required one)") else { return [] }
        var params: [PipelineParameter] = []
        for (name, value, location) in pairs {
            guard isValidID(name) else {
                document.record(.invalidValue, at: location, "parameter name `\(name)` must be 1–64 of A–Z a–z 0–9 _ -")
                continue
            }
            guard let json = document.json(value, key: location.key) else { continue }
            params.append(PipelineParameter(name: name, defaultValue: json == .null ? nil : json, location: location))
        }
        return params
    }

    static func parseSchedule(_ node: Node, key: String, document: inout YAMLDocument) -> CronSchedule? {
        let location = document.location(of: node, key: key)
        if case .scalar = node {
            guard let text = document.string(node, key: key, what: "`schedule`") else { return nil }
            guard let cron = parseCron(text, node: node, key: key, document: &document) else { return nil }
            return CronSchedule(cron: cron, timeZone: TimeZone(identifier: "UTC")!, location: location)
        }
        guard let pairs = document.mapping(node, key: key, allowed: scheduleKeys, what: "`schedule`") else { return nil }
        var cron: CronExpression?
        var zone = TimeZone(identifier: "UTC")!
        var missed = MissedRunPolicy.skip
        var grace = Duration.seconds(300)
        var ok = true
        for (name, value, valueLocation) in pairs {
            switch name {
            case "cron":
                if let text = document.string(value, key: valueLocation.key, what: "`cron`") {
                    cron = parseCron(text, node: value, key: valueLocation.key, document: &document)
                }
                if cron == nil { ok = false }
            case "timezone":
                if let identifier = document.string(value, key: valueLocation.key, what: "`timezone`") {
                    if let found = CronExpression.timeZone(named: identifier) { zone = found } else {
                        ok = false
                        document.record(.unknownTimeZone, at: valueLocation, "`\(identifier)` is not a time zone of the IANA database (e.g. UTC, Europe/Berlin, America/New_York)")
                    }
                } else { ok = false }
            case "missed":
                if let policy = parseEnum(value, key: valueLocation.key, as: MissedRunPolicy.self, document: &document) { missed = policy } else { ok = false }
            case "grace":
                if let value = document.duration(value, key: valueLocation.key, what: "`grace`") { grace = value } else { ok = false }
            default: break
            }
        }
        guard ok else { return nil }
        guard let cron else {
            document.record(.missingKey, at: location, "`schedule` has no `cron`; add e.g. `cron: \"0 2 * * *\"`")
            return nil
        }
        return CronSchedule(cron: cron, timeZone: zone, missed: missed, grace: grace, location: location)
    }

    static func parseCron(_ text: String, node: Node, key: String, document: inout YAMLDocument) -> CronExpression? {
        do throws(CronSyntaxError) {
            return try CronExpression(parsing: text)
        } catch {
            let location = document.location(of: node, key: key).shifted(by: error.column - 1 + quoteWidth(node))
            document.record(.badCron, at: location, "cron `\(text)`: \(error.message)")
            return nil
        }
    }

    /// 1 when the scalar is quoted (its text starts one column after the node's mark).
    static func quoteWidth(_ node: Node) -> Int {
        if case .scalar(let scalar) = node, scalar.style == .singleQuoted || scalar.style == .doubleQuoted { return 1 }
        return 0
    }

    static func parseStep(_ node: Node, key: String, defaults: PipelineDefinition, document: inout YAMLDocument) -> StepDefinition? {
        guard let pairs = document.mapping(node, key: key, allowed: stepKeys, what: "a step") else { return nil }
        let location = document.location(of: node, key: key)
        var step = StepDefinition(id: "", kind: "", queue: defaults.queue, tier: defaults.tier, payload: .literal(.null), needs: [],
                                  timeout: nil, maxAttempts: nil, passWhen: nil, onFailure: defaults.onFailure, trigger: .allPassed,
                                  forEach: nil, location: location, keyLocations: [:], needsLocations: [])
        var hasID = false, hasKind = false
        for (name, value, valueLocation) in pairs {
            step.keyLocations[name] = valueLocation
            switch name {
            case "id":
                guard let id = document.string(value, key: valueLocation.key, what: "`id`") else { continue }
                guard isValidID(id) else {
                    document.record(.invalidValue, at: valueLocation, "step id `\(id)` must be 1–64 of A–Z a–z 0–9 _ - (templates write it as ${steps.\(id).result})")
                    continue
                }
                step.id = id
                hasID = true
            case "kind":
                guard let kind = document.string(value, key: valueLocation.key, what: "`kind`") else { continue }
                step.kind = kind
                hasKind = true
            case "queue":
                guard let queue = document.string(value, key: valueLocation.key, what: "`queue`") else { continue }
                if QueueKeys.isValidName(queue) { step.queue = queue } else {
                    document.record(.invalidValue, at: valueLocation, "queue name `\(queue)` must be 1–64 of A–Z a–z 0–9 _ - .")
                }
            case "tier": step.tier = parseTier(value, key: valueLocation.key, document: &document) ?? step.tier
            case "payload": step.payload = template(value, key: valueLocation.key, document: &document) ?? .literal(.null)
            case "needs":
                for (parent, parentLocation) in document.stringList(value, key: valueLocation.key, what: "`needs`") ?? [] {
                    step.needs.append(parent)
                    step.needsLocations.append(parentLocation)
                }
            case "timeout": step.timeout = document.duration(value, key: valueLocation.key, what: "`timeout`")
            case "max_attempts": step.maxAttempts = document.integer(value, key: valueLocation.key, what: "`max_attempts`", range: 1...1000)
            case "pass_when":
                guard let text = document.string(value, key: valueLocation.key, what: "`pass_when`") else { continue }
                do throws(ConditionSyntaxError) {
                    step.passWhen = try PassCondition(parsing: text)
                } catch {
                    var at = valueLocation
                    if error.line == 1 { at = at.shifted(by: error.column - 1 + quoteWidth(value)) } else {
                        at = SourceLocation(file: at.file, line: at.line + error.line - 1, column: error.column, key: at.key)
                    }
                    let hint = text.hasPrefix("${") ? " (write the condition itself, e.g. `result.passed == true`, without ${…})" : ""
                    document.record(.badCondition, at: at, "pass_when `\(text)`: \(error.message)\(hint)")
                }
            case "on_failure":
                if let policy = parseEnum(value, key: valueLocation.key, as: FailurePolicy.self, document: &document) { step.onFailure = policy }
            case "trigger":
                if let trigger = parseEnum(value, key: valueLocation.key, as: StepTrigger.self, document: &document) { step.trigger = trigger }
            case "for_each":
                switch value {
                case .sequence(let items):
                    var list: [PayloadTemplate] = []
                    for (index, item) in items.enumerated() {
                        if let element = template(item, key: "\(valueLocation.key)[\(index)]", document: &document) { list.append(element) }
                    }
                    step.forEach = .list(list)
                case .scalar:
                    guard let text = document.string(value, key: valueLocation.key, what: "`for_each`") else { continue }
                    do throws(TemplateSyntaxError) {
                        if case .whole(let reference, let at) = try TemplateParser.parse(text, location: valueLocation) {
                            step.forEach = .template(reference, at)
                        } else {
                            document.record(.wrongType, at: valueLocation, "`for_each` must be a list, or one reference that gives a list such as `${params.shards}`; got `\(text)`")
                        }
                    } catch {
                        document.record(.badTemplate, at: valueLocation.shifted(by: error.offset + quoteWidth(value)), error.message)
                    }
                default:
                    document.record(.wrongType, at: valueLocation, "`for_each` must be a list, or one reference that gives a list such as `${params.shards}`")
                }
            default: break
            }
        }
        if !hasID, !pairs.contains(where: { $0.key == "id" }) {
            document.record(.missingKey, at: location, "the step has no `id`; add `id: some-name`")
        }
        if !hasKind, !pairs.contains(where: { $0.key == "kind" }) {
            document.record(.missingKey, at: location, "step `\(step.id)` has no `kind`; add the job kind it runs (e.g. `kind: train`)")
        }
        return hasID && hasKind ? step : nil
    }

    /// A payload node as a template: strings are searched for `${…}`, everything else is JSON.
    static func template(_ node: Node, key: String, document: inout YAMLDocument) -> PayloadTemplate? {
        switch node {
        case .scalar(let scalar):
            let isText = scalar.style != .plain || ![.null, .bool, .int, .float].contains(node.resolvedTag)
            guard isText, scalar.string.contains("${") else { return document.json(node, key: key).map(PayloadTemplate.literal) }
            let location = document.location(of: node, key: key)
            do throws(TemplateSyntaxError) {
                return try TemplateParser.parse(scalar.string, location: location)
            } catch {
                document.record(.badTemplate, at: location.shifted(by: error.offset + quoteWidth(node)), error.message)
                return nil
            }
        case .sequence(let sequence):
            var items: [PayloadTemplate] = []
            var ok = true
            for (index, item) in sequence.enumerated() {
                if let value = template(item, key: "\(key)[\(index)]", document: &document) { items.append(value) } else { ok = false }
            }
            guard ok else { return nil }
            let literals = items.compactMap { if case .literal(let value) = $0 { return value } else { return nil } }
            return literals.count == items.count ? .literal(.array(literals)) : .array(items)
        case .mapping:
            guard let pairs = document.freeMapping(node, key: key, what: "`\(key)`") else { return nil }
            var fields: [String: PayloadTemplate] = [:]
            var ok = true
            for (name, value, location) in pairs {
                if let field = template(value, key: location.key, document: &document) { fields[name] = field } else { ok = false }
            }
            guard ok else { return nil }
            var literals: [String: JSONValue] = [:]
            for (name, field) in fields { if case .literal(let value) = field { literals[name] = value } }
            return literals.count == fields.count ? .literal(.object(literals)) : .object(fields)
        case .alias:
            return document.json(node, key: key).map(PayloadTemplate.literal)
        }
    }
}
