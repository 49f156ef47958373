import Foundation
import JobProtocol

/// A `--param` that does not fit the pipeline: unknown, or a required one left out.
public struct ParameterError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

extension ValidatedPipeline {
    /// The parameters of a run: each given value (the text of `--param name=value`: JSON when it parses as JSON,
    /// else the text itself, so `--param epochs=5` is a number and `--param name=digits` a string), else the default.
    /// Every unknown or missing parameter is named in one error.
    public func parameters(given: [String: String]) throws(ParameterError) -> [String: JSONValue] {
        let declared = Dictionary(uniqueKeysWithValues: definition.params.map { ($0.name, $0) })
        var problems: [String] = []
        for name in given.keys.sorted() where declared[name] == nil {
            let known = definition.params.map(\.name).joined(separator: ", ")
            problems.append("unknown parameter `\(name)` (this pipeline has: \(known.isEmpty ? "none" : known))")
        }
        var values: [String: JSONValue] = [:]
        for parameter in definition.params {
            if let text = given[parameter.name] {
                values[parameter.name] = (try? JSONValue(parsing: text)) ?? .string(text)
            } else if let value = parameter.defaultValue {
                values[parameter.name] = value
            } else {
                problems.append("parameter `\(parameter.name)` has no default; give it with --param \(parameter.name)=VALUE")
            }
        }
        guard problems.isEmpty else { throw ParameterError(message: problems.joined(separator: "; ")) }
        return values
    }
}

extension RunContext {
    /// The context of a run that starts (or a scheduled run that fires) at `start`: `run.date` is its day in `zone`,
    /// `run.time` the ISO 8601 time (UTC).
    public init(runID: String, pipeline: String, start: Date, zone: TimeZone, params: [String: JSONValue]) {
        let day = DateFormatter()
        day.locale = Locale(identifier: "en_US_POSIX")
        day.timeZone = zone
        day.dateFormat = "yyyy-MM-dd"
        self.init(runID: runID, pipeline: pipeline, date: day.string(from: start), time: ISO8601DateFormatter().string(from: start), params: params)
    }
}

extension StepDefinition {
    /// The step's payload for this run (for a `for_each` step, set `context.item` first).
    public func payload(in context: RunContext) throws(TemplateResolutionError) -> JSONValue {
        try payload.resolve(in: context)
    }

    /// The elements a `for_each` step runs for, or nil for an ordinary step. A template that does not give a list
    /// is an error (the step fails with it).
    public func items(in context: RunContext) throws(TemplateResolutionError) -> [JSONValue]? {
        switch forEach {
        case nil: return nil
        case .list(let items):
            var values: [JSONValue] = []
            for item in items { values.append(try item.resolve(in: context)) }
            return values
        case .template(let reference, let location):
            let value = try PayloadTemplate.whole(reference, location).resolve(in: context)
            guard case .array(let values) = value else {
                throw TemplateResolutionError(reference: reference.description, location: location,
                                              message: "for_each needs a list, got \(value.kindDescription)")
            }
            return values
        }
    }

    /// The state a succeeded job of this step ends in: `passed`, or `not_passed` with the reason when `pass_when`
    /// is false for its result.
    public func endState(ofSucceededResult result: JSONValue, params: [String: JSONValue]) -> (state: StepState, reason: String?) {
        guard let passWhen else { return (.passed, nil) }
        if passWhen.evaluate(result: result, params: params) { return (.passed, nil) }
        return (.notPassed, "pass_when " + passWhen.explain(result: result, params: params))
    }
}
