import JobProtocol
import Pipelines
import Testing

@Suite("Templates and pass_when")
struct TemplateTests {
    func payload(_ yaml: String) throws -> PayloadTemplate {
        let pipeline = try ValidatedPipeline.validate(yaml: yaml, file: "t.yaml", knownKinds: nil)
        return pipeline.step("b")!.payload
    }

    static let yaml = """
        name: p
        params:
          epochs: 5
          shards: [a, b]
        steps:
          - {id: train, kind: train}
          - id: b
            kind: validate
            needs: [train]
            payload:
              model: ${steps.train.result.model}
              accuracy: ${steps.train.result.accuracy}
              history: ${steps.train.result.history}
              first: ${steps.train.result.history.0}
              epochs: ${params.epochs}
              shards: ${params.shards}
              label: "${steps.train.result.model} after ${params.epochs} epochs on ${run.date} (${steps.train.result.history})"
              literal: "costs $${price}"
              nothing: ${steps.train.result.missing-ok}
              plain: 3
        """

    let context = RunContext(runID: "run-1", pipeline: "p", date: "2026-11-30", time: "2026-11-30T02:00:00Z",
                             params: ["epochs": .number(5), "shards": .array([.string("a"), .string("b")])],
                             results: ["train": .object([
                                "model": .string("digits-mlp:7"), "accuracy": .number(0.98),
                                "history": .array([.number(1.5), .number(0.25)]), "missing-ok": .null,
                             ])])

    @Test func wholeValuesKeepTheirTypeAndTextIsSubstitutedInside() throws {
        let resolved = try payload(Self.yaml).resolve(in: context)
        #expect(resolved["model"] == .string("digits-mlp:7"))
        #expect(resolved["accuracy"] == .number(0.98))
        #expect(resolved["history"] == .array([.number(1.5), .number(0.25)]))
        #expect(resolved["first"] == .number(1.5))
        #expect(resolved["epochs"] == .number(5))
        #expect(resolved["shards"] == .array([.string("a"), .string("b")]))
        #expect(resolved["label"] == .string("digits-mlp:7 after 5 epochs on 2026-11-30 ([1.5,0.25])"))
        #expect(resolved["literal"] == .string("costs ${price}"))
        #expect(resolved["nothing"] == .null)
        #expect(resolved["plain"] == .number(3))
    }

    @Test func aMissingFieldIsAnErrorThatSaysWhatTheResultHas() throws {
        var context = self.context
        context.results["train"] = .object(["version": .number(7)])
        #expect {
            try payload(Self.yaml).resolve(in: context)
        } throws: { error in
            // Every templated field is missing: whichever is resolved first is named, with where it was written.
            "\(error)".contains("has no field") && "\(error)".contains("(it has: version)") && "\(error)".contains("t.yaml:")
        }
    }

    @Test func aStepWithoutResultIsNullAsAWholeValueAndAnErrorInText() throws {
        var context = self.context
        context.results = [:]
        let whole = try TemplateProbe.template("${steps.train.result}")
        #expect(try whole.resolve(in: context) == .null)
        let text = try TemplateProbe.template("model ${steps.train.result.model}")
        #expect(throws: TemplateResolutionError.self) { try text.resolve(in: context) }
    }

    @Test func passWhenEvaluatesOnTheResult() throws {
        let condition = try PassCondition(parsing: "result.passed == true && (result.accuracy >= 0.9 || !result.strict) && result.name != 'x'")
        #expect(condition.evaluate(result: .object(["passed": .bool(true), "accuracy": .number(0.95), "name": .string("m")])))
        #expect(!condition.evaluate(result: .object(["passed": .bool(true), "accuracy": .number(0.5), "strict": .bool(true)])))
        #expect(condition.evaluate(result: .object(["passed": .bool(true), "accuracy": .number(0.5), "strict": .bool(false)])))
        #expect(!condition.evaluate(result: .object(["passed": .bool(false), "accuracy": .number(0.99)])))
        // A bare value is true only when it is `true`; comparisons across types are false; missing reads null.
        #expect(try !PassCondition(parsing: "result.count").evaluate(result: .object(["count": .number(1)])))
        #expect(try !PassCondition(parsing: "result.size < 10").evaluate(result: .object(["size": .string("5")])))
        #expect(try PassCondition(parsing: "result.nothing == null").evaluate(result: .object([:])))
        #expect(try PassCondition(parsing: "result.checks.0.passed").evaluate(result: .object(["checks": .array([.object(["passed": .bool(true)])])])))
        #expect(try PassCondition(parsing: "result.accuracy >= params.min").evaluate(result: .object(["accuracy": .number(0.9)]), params: ["min": .number(0.9)]))
        let why = condition.explain(result: .object(["passed": .bool(false), "accuracy": .number(0.5)]))
        #expect(why.contains("is false"))
        #expect(why.contains("result.passed = false"))
        #expect(why.contains("result.accuracy = 0.5"))
    }

    @Test(arguments: [
        ("result.passed = true", 1, 15, "compare with `==`"),
        ("result.passed == ", 1, 18, "expected a value"),
        ("(result.a > 1", 1, 14, "not closed"),
        ("result.a > 1 result.b", 1, 14, "after a complete condition"),
        ("1 < result.a < 3", 1, 14, "do not chain"),
        ("accuracy > 0.9", 1, 1, "`result.<field>`"),
        ("result.a &\n result.b", 1, 10, "write `&&`"),
        ("result.a &&\n  'open", 2, 3, "not closed"),
        ("", 1, 1, "empty"),
    ])
    func conditionErrorsNameLineAndColumn(source: String, line: Int, column: Int, text: String) {
        #expect {
            try PassCondition(parsing: source)
        } throws: { error in
            guard let error = error as? ConditionSyntaxError else { return false }
            return error.line == line && error.column == column && error.message.contains(text)
        }
    }
}

/// Builds a lone template through a one-step pipeline (the parser is internal).
enum TemplateProbe {
    static func template(_ text: String) throws -> PayloadTemplate {
        let yaml = "name: p\nsteps:\n  - {id: train, kind: noop}\n  - id: b\n    kind: noop\n    needs: [train]\n    payload:\n      x: \"\(text)\"\n"
        let pipeline = try ValidatedPipeline.validate(yaml: yaml, file: "t.yaml", knownKinds: nil)
        guard case .object(let fields) = pipeline.step("b")!.payload, let field = fields["x"] else { throw TestError() }
        return field
    }
    struct TestError: Error {}
}
