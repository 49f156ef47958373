import Foundation
import JobProtocol

/// A pipeline file that passed every check: the definition, its steps in topological order, and the graph the
/// engine advances.
public struct ValidatedPipeline: Sendable {
    public let definition: PipelineDefinition
    /// The graph, its steps in topological order (file order among steps that do not depend on each other).
    public let graph: PipelineGraph
    /// The file's text, as validated: a run keeps it in its record, so that whoever advances the run later (any
    /// worker) validates the same definition again without the file.
    public let source: String

    /// Reads, parses and validates a file. `knownKinds` are the job kinds the farm runs (nil: any kind).
    public static func load(path: String, knownKinds: Set<String>?) throws(DefinitionErrors) -> ValidatedPipeline {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DefinitionErrors([DefinitionError(.missingKey, at: SourceLocation(file: path, line: 1, column: 1, key: ""), "cannot read the file; check the path")])
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DefinitionErrors([DefinitionError(.yamlSyntax, at: SourceLocation(file: path, line: 1, column: 1, key: ""), "the file is not UTF-8 text")])
        }
        return try validate(yaml: text, file: path, knownKinds: knownKinds)
    }

    /// Parses and validates YAML text; every error found is thrown together.
    public static func validate(yaml: String, file: String, knownKinds: Set<String>?) throws(DefinitionErrors) -> ValidatedPipeline {
        let (parsed, parseErrors) = PipelineDefinition.parse(yaml: yaml, file: file)
        guard let definition = parsed else { throw DefinitionErrors(parseErrors) }
        let (graph, graphErrors) = check(definition, knownKinds: knownKinds)
        let errors = parseErrors + graphErrors
        guard errors.isEmpty, let graph else { throw DefinitionErrors(errors) }
        return ValidatedPipeline(definition: definition, graph: graph, source: yaml)
    }

    /// The step named `id`.
    public func step(_ id: String) -> StepDefinition? { definition.steps.first { $0.id == id } }

    /// The checks on top of parsing: ids, parents, cycles, kinds, templates, pass_when parameters.
    static func check(_ definition: PipelineDefinition, knownKinds: Set<String>?) -> (PipelineGraph?, [DefinitionError]) {
        var errors: [DefinitionError] = []
        var byID: [String: StepDefinition] = [:]
        var steps: [StepDefinition] = []
        for step in definition.steps {
            if let first = byID[step.id] {
                errors.append(DefinitionError(.duplicateID, at: step.location(of: "id"),
                                              "step id `\(step.id)` is used twice (first at line \(first.location(of: "id").line)); give each step its own id"))
                continue
            }
            byID[step.id] = step
            steps.append(step)
        }
        let ids = steps.map(\.id)
        // Parents: known ones only (each unknown one is an error).
        var parents: [String: [String]] = [:]
        for step in steps {
            var known: [String] = []
            for (index, parent) in step.needs.enumerated() {
                let at = index < step.needsLocations.count ? step.needsLocations[index] : step.location(of: "needs")
                if byID[parent] == nil {
                    let near = ids.first { YAMLDocument.isNear($0, parent) }.map { " (did you mean `\($0)`?)" } ?? ""
                    errors.append(DefinitionError(.unknownParent, at: at, "step `\(step.id)` needs `\(parent)`, which is not a step of this pipeline\(near); steps: \(ids.joined(separator: ", "))"))
                } else if !known.contains(parent) {
                    known.append(parent)
                }
            }
            parents[step.id] = known
        }
        // Topological order (Kahn), file order among ready steps; what is left is on or behind a cycle.
        var order: [String] = []
        var remaining = Set(ids)
        while true {
            guard let next = ids.first(where: { remaining.contains($0) && parents[$0, default: []].allSatisfy { !remaining.contains($0) } }) else { break }
            order.append(next)
            remaining.remove(next)
        }
        if !remaining.isEmpty {
            for cycle in cycles(among: ids.filter(remaining.contains), parents: parents) {
                let first = byID[cycle[0]]!
                let parentIndex = first.needs.firstIndex(of: cycle[1]) ?? 0
                let at = parentIndex < first.needsLocations.count ? first.needsLocations[parentIndex] : first.location(of: "needs")
                // Written as the order the steps would run in: parent → child.
                let path = cycle.reversed().joined(separator: " → ")
                errors.append(DefinitionError(.cycle, at: at, "the steps form a cycle: \(path); remove one of these `needs`"))
            }
        }
        // Ancestors of each step (over the known parents; cycles included, harmlessly).
        var ancestors: [String: Set<String>] = [:]
        func ancestorsOf(_ id: String) -> Set<String> {
            if let done = ancestors[id] { return done }
            var seen: Set<String> = []
            var stack = parents[id, default: []]
            while let next = stack.popLast() {
                if seen.insert(next).inserted { stack.append(contentsOf: parents[next, default: []]) }
            }
            ancestors[id] = seen
            return seen
        }
        let paramNames = Set(definition.params.map(\.name))
        for step in steps {
            if let knownKinds, !knownKinds.contains(step.kind) {
                let near = knownKinds.sorted().first { YAMLDocument.isNear($0, step.kind) }.map { " (did you mean `\($0)`?)" } ?? ""
                errors.append(DefinitionError(.unknownKind, at: step.location(of: "kind"),
                                              "unknown job kind `\(step.kind)`\(near); this farm runs: \(knownKinds.sorted().joined(separator: ", "))"))
            }
            var references = step.payload.references.map { ($0.0, $0.1, true) }
            switch step.forEach {
            case .list(let items): references += items.flatMap(\.references).map { ($0.0, $0.1, false) }
            case .template(let reference, let at): references.append((reference, at, false))
            case nil: break
            }
            for (reference, at, inPayload) in references {
                switch reference {
                case .stepResult(let other, _):
                    if byID[other] == nil {
                        errors.append(DefinitionError(.badTemplate, at: at, "${\(reference)} names no step of this pipeline; steps: \(ids.joined(separator: ", "))"))
                    } else if !ancestorsOf(step.id).contains(other) {
                        let why = other == step.id ? "a step cannot read its own result" : "add `\(other)` to the `needs` of `\(step.id)` (or of one of its parents)"
                        errors.append(DefinitionError(.templateNotAncestor, at: at, "${\(reference)}: `\(other)` is not an ancestor of `\(step.id)`, so its result may not exist yet; \(why)"))
                    }
                case .run(let field):
                    if !RunContext.fields.contains(field) {
                        errors.append(DefinitionError(.unknownRunField, at: at, "${\(reference)}: the run has no field `\(field)`; use one of \(RunContext.fields.map { "run.\($0)" }.joined(separator: ", "))"))
                    }
                case .param(let name, _):
                    if !paramNames.contains(name) {
                        errors.append(DefinitionError(.unknownParam, at: at, "${\(reference)}: no parameter `\(name)` is declared; add it under `params:` (declared: \(paramNames.sorted().joined(separator: ", ")))"))
                    }
                case .item:
                    if step.forEach == nil || !inPayload {
                        errors.append(DefinitionError(.badTemplate, at: at, "${\(reference)} exists only in the payload of a step with `for_each`"))
                    }
                }
            }
            for path in step.passWhen?.paths ?? [] where path.first == "params" {
                if path.count < 2 || !paramNames.contains(path[1]) {
                    errors.append(DefinitionError(.unknownParam, at: step.location(of: "pass_when"),
                                                  "pass_when reads `\(path.joined(separator: "."))`, but no such parameter is declared under `params:`"))
                }
            }
        }
        guard errors.isEmpty else { return (nil, errors) }
        let graph = PipelineGraph(steps: order.map { id in
            let step = byID[id]!
            return PipelineGraph.Step(id: id, parents: parents[id, default: []], onFailure: step.onFailure, trigger: step.trigger)
        })
        return (graph, errors)
    }

    /// One cycle per strongly connected group of `candidates`, each as a list of ids where every id needs the next
    /// and the last needs the first.
    static func cycles(among candidates: [String], parents: [String: [String]]) -> [[String]] {
        var reported: Set<String> = []
        var cycles: [[String]] = []
        let inCandidates = Set(candidates)
        for start in candidates where !reported.contains(start) {
            // Walk parents from `start` until a step repeats: the repeat closes a cycle.
            var path: [String] = []
            var position: [String: Int] = [:]
            var current = start
            var closed = false
            while true {
                if position[current] != nil { closed = true; break }
                position[current] = path.count
                path.append(current)
                guard let next = parents[current, default: []].first(where: { inCandidates.contains($0) }) else { break }
                current = next
            }
            guard closed, let begin = position[current] else { continue }
            var cycle = Array(path[begin...])
            if cycle.contains(where: reported.contains) { continue }
            reported.formUnion(cycle)
            cycle.append(cycle[0])
            cycles.append(cycle)
        }
        return cycles
    }
}
