import Foundation
import JobProtocol
@testable import MLJobs
import Testing

/// An inference result's `predictions` and `topK` are written as text in one pass: the same JSON text, member for
/// member, as the synthesized encoding they replace.
@Suite struct InferenceOutputTextTests {
    /// The synthesized encoding of the same fields, as the result was encoded before.
    struct Synthesized: Encodable {
        struct Score: Encodable {
            var index: Int
            var label: String?
            var probability: Float
        }
        var model: String
        var sha256: String
        var precision: String
        var rows: Int
        var predictions: [Int]
        var topK: [[Score]]
        var logits: FloatMatrix?
        var probabilities: FloatMatrix?
        var batchRows: Int
        var batchRequests: Int
    }

    @Test(arguments: [false, true])
    func sameTextAsTheSynthesizedEncoding(labels: Bool) throws {
        let names = ["cat", "say \"hi\"\n", "ünï\u{1}", "back\\slash"]
        var topK: [[InferenceJob.Score]] = []
        var predictions: [Int] = []
        for r in 0..<5 {
            predictions.append(r % 4)
            topK.append((0..<3).map { k in
                InferenceJob.Score(index: (r + k) % 4, label: labels ? names[(r + k) % 4] : nil,
                                   probability: [0.1, 1e-7, 0.333333343, 1, 3.4028235e38, 1.4e-45][(r + k) % 6])
            })
        }
        let logits = FloatMatrix(rows: 5, columns: 2, values: (0..<10).map { Float($0) * 0.25 }, encoding: .numbers)
        let output = InferenceJob.Output(model: "m:1", sha256: "ab", precision: "fp32", rows: 5, predictions: predictions, topK: topK,
                                         logits: logits, probabilities: nil, batchRows: 5, batchRequests: 1)
        let before = Synthesized(
            model: "m:1", sha256: "ab", precision: "fp32", rows: 5, predictions: predictions,
            topK: topK.map { $0.map { Synthesized.Score(index: $0.index, label: $0.label, probability: $0.probability) } },
            logits: logits, probabilities: nil, batchRows: 5, batchRequests: 1)
        let text = try JSONValueEncoder().encodeText(output)
        #expect(text == (try JSONValueEncoder().encodeText(before)))
        #expect(try JSONValue(parsing: text) == JSONValueEncoder().encode(output))
        // Foundation's encoder gets the same value.
        let foundation = try JSONValue(parsing: JSONEncoder().encode(output))
        #expect(foundation["topK"] == (try JSONValue(parsing: text))["topK"])
    }
}
