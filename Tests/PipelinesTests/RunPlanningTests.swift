import Foundation
import JobProtocol
import Pipelines
import Testing

@Suite("Run planning: parameters, run fields, for_each, end states")
struct RunPlanningTests {
    static let yaml = """
        name: p
        params:
          epochs: 60
          name: digits
          shards: [a.csv, b.csv]
          tag: ~
        steps:
          - id: fan
            kind: batch_analysis
            for_each: ${params.shards}
            payload: {dataset: "${item}", day: "${run.date}"}
            pass_when: result.rows > 0
          - id: literal
            kind: noop
            for_each: [1, "${params.name}"]
          - {id: plain, kind: noop, payload: {epochs: "${params.epochs}"}}
        """

    func pipeline() throws -> ValidatedPipeline {
        try ValidatedPipeline.validate(yaml: Self.yaml, file: "p.yaml", knownKinds: nil)
    }

    @Test func parametersTakeJSONOrTextThenDefaults() throws {
        let params = try pipeline().parameters(given: ["epochs": "5", "tag": "nightly", "shards": "[\"x.csv\"]"])
        #expect(params["epochs"] == .number(5))
        #expect(params["tag"] == .string("nightly"))
        #expect(params["shards"] == .array([.string("x.csv")]))
        #expect(params["name"] == .string("digits"))
    }

    @Test func unknownAndMissingParametersAreNamedTogether() throws {
        #expect {
            try pipeline().parameters(given: ["epoch": "5"])
        } throws: { error in
            let text = "\(error)"
            return text.contains("unknown parameter `epoch`") && text.contains("parameter `tag` has no default")
        }
    }

    @Test func runDateIsTheDayInTheSchedulesZone() {
        let start = utc("2026-11-30T23:30:00Z")
        let berlin = RunContext(runID: "r", pipeline: "p", start: start, zone: TimeZone(identifier: "Europe/Berlin")!, params: [:])
        #expect(berlin.date == "2026-12-01")
        #expect(berlin.time == "2026-11-30T23:30:00Z")
        let newYork = RunContext(runID: "r", pipeline: "p", start: start, zone: TimeZone(identifier: "America/New_York")!, params: [:])
        #expect(newYork.date == "2026-11-30")
    }

    @Test func forEachItemsAndTheirPayloads() throws {
        let pipeline = try pipeline()
        var context = RunContext(runID: "r", pipeline: "p", start: utc("2026-11-30T12:00:00Z"), zone: TimeZone(identifier: "UTC")!,
                                 params: try pipeline.parameters(given: ["tag": "t"]))
        let fan = try #require(pipeline.step("fan"))
        let items = try #require(try fan.items(in: context))
        #expect(items == [.string("a.csv"), .string("b.csv")])
        context.item = items[1]
        #expect(try fan.payload(in: context) == .object(["dataset": .string("b.csv"), "day": .string("2026-11-30")]))
        #expect(try pipeline.step("literal")?.items(in: context) == [.number(1), .string("digits")])
        #expect(try pipeline.step("plain")?.items(in: context) == nil)
        #expect(try pipeline.step("plain")?.payload(in: context) == .object(["epochs": .number(60)]))
        context.params["shards"] = .string("not a list")
        #expect(throws: TemplateResolutionError.self) { try fan.items(in: context) }
    }

    @Test func endStateFollowsPassWhen() throws {
        let fan = try #require(try pipeline().step("fan"))
        #expect(fan.endState(ofSucceededResult: .object(["rows": .number(10)]), params: [:]).state == .passed)
        let failed = fan.endState(ofSucceededResult: .object(["rows": .number(0)]), params: [:])
        #expect(failed.state == .notPassed)
        #expect(failed.reason == "pass_when `result.rows > 0` is false (result.rows = 0)")
        #expect(try pipeline().step("plain")?.endState(ofSucceededResult: .null, params: [:]).state == .passed)
    }
}
