import Foundation
import Pipelines
import Testing

/// The samples in docs/PIPELINES.md: every YAML pipeline validates, every `pass_when` example parses, every cron
/// example in the text gives the firings it states.
@Suite("docs/PIPELINES.md samples")
struct DocSampleTests {
    static let page = try! String(contentsOf: DefinitionTests.repository.appendingPathComponent("docs/PIPELINES.md"), encoding: .utf8)

    /// The fenced blocks whose opening fence is "```" + `language` ("" for plain blocks).
    static func blocks(_ language: String) -> [String] {
        var blocks: [String] = []
        var current: [String] = []
        var inside: String?
        for line in page.split(separator: "\n", omittingEmptySubsequences: false) {
            if inside == nil {
                if line.hasPrefix("```") { inside = String(line.dropFirst(3)); current = [] }
                continue
            }
            if line == "```" {
                if inside == language { blocks.append(current.joined(separator: "\n")) }
                inside = nil
                continue
            }
            current.append(String(line))
        }
        return blocks
    }

    @Test func yamlSamplesValidate() throws {
        let samples = Self.blocks("yaml").filter { !$0.hasPrefix("# A file with mistakes") }
        #expect(samples.count >= 2)
        for sample in samples {
            _ = try ValidatedPipeline.validate(yaml: sample, file: "PIPELINES.md", knownKinds: testKinds)
        }
    }

    @Test func passWhenExamplesParse() throws {
        for example in ["result.passed == true", "result.accuracy >= 0.97 && result.sizeRatio <= 0.3",
                        "!(result.stoppedEarly == true) || result.holdoutAccuracy > params.min_accuracy", "result.checks.0.passed"] {
            #expect(Self.page.contains("`\(example)`"))
            _ = try PassCondition(parsing: example)
        }
    }

    @Test func cronExamplesInTheText() throws {
        #expect(Self.page.contains("`30 2 * * *` fires at 01:00 UTC on 2026-03-29 (03:00 CEST) and at 00:30 UTC only on 2026-10-25"))
        let berlin = TimeZone(identifier: "Europe/Berlin")!
        let fixed = try CronExpression(parsing: "30 2 * * *")
        #expect(fixed.nextFiring(after: utc("2026-03-28T12:00:00Z"), in: berlin) == utc("2026-03-29T01:00:00Z"))
        #expect(fixed.firings(after: utc("2026-10-24T12:00:00Z"), in: berlin, count: 1) == [utc("2026-10-25T00:30:00Z")])
        // The `schedule next` sample.
        let lines = try CronExpression(parsing: "30 2 * * *").firings(after: utc("2026-03-28T12:00:00Z"), in: berlin, count: 2).map(iso)
        #expect(lines == ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"])
        #expect(Self.page.contains("2026-03-29 03:00 Sun +02:00 (2026-03-29T01:00:00Z)"))
    }

    @Test func theBadFileGivesTheErrorsShown() throws {
        let bad = try #require(Self.blocks("yaml").first { $0.hasPrefix("# A file with mistakes") })
        let output = try #require(Self.blocks("").first { $0.hasPrefix("$ jobfarm pipeline validate bad.yaml") })
        let shown = output.split(separator: "\n").dropFirst().dropLast().map(String.init)
        let kinds: Set<String> = ["batch_analysis", "echo", "fail", "inference", "noop", "promote", "quantize", "sleep", "train", "validate"]
        #expect(throws: DefinitionErrors.self) { try ValidatedPipeline.validate(yaml: bad, file: "bad.yaml", knownKinds: kinds) }
        do throws(DefinitionErrors) {
            _ = try ValidatedPipeline.validate(yaml: bad, file: "bad.yaml", knownKinds: kinds)
        } catch {
            #expect(error.errors.map(\.description) == shown)
        }
    }
}
