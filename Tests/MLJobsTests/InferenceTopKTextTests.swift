import Foundation
import JobProtocol
@testable import MLJobs
import Testing

/// The inference answer's top-k, chosen by insertion and written in one pass, against what it replaced: a stable
/// sort of each row's classes by probability, `[[Score]]`, and the synthesized encoding.
@Suite struct InferenceTopKTextTests {
    /// What the worker did before: softmax, then every class sorted by (probability desc, index asc).
    static func reference(_ logits: [Float], rows: Int, classes: Int, k: Int, labels: [String]?) -> (predictions: [Int], topK: [[InferenceJob.Score]]) {
        var predictions: [Int] = []
        var topK: [[InferenceJob.Score]] = []
        for r in 0..<rows {
            let z = Array(logits[(r * classes)..<((r + 1) * classes)])
            var row = [Float](repeating: 0, count: classes)
            z.withUnsafeBufferPointer { z in row.withUnsafeMutableBufferPointer { softmax(z, into: $0) } }
            let order = (0..<classes).sorted { row[$0] != row[$1] ? row[$0] > row[$1] : $0 < $1 }
            predictions.append(order[0])
            topK.append(order.prefix(k).map { InferenceJob.Score(index: $0, label: labels?[$0], probability: row[$0]) })
        }
        return (predictions, topK)
    }

    static func chosen(_ logits: [Float], rows: Int, classes: Int, k: Int, labels: [String]?, probabilities: Bool = false)
        -> (predictions: [Int], scores: InferenceJob.TopScores, probabilities: [Float]) {
        var all = [Float](repeating: -1, count: probabilities ? rows * classes : 0)
        let (predictions, scores) = logits.withUnsafeBufferPointer { logits in
            probabilities
                ? all.withUnsafeMutableBufferPointer { InferenceJob.topScores(logits: logits, rows: rows, classes: classes, k: k, labels: labels, probabilities: $0) }
                : InferenceJob.topScores(logits: logits, rows: rows, classes: classes, k: k, labels: labels, probabilities: nil)
        }
        return (predictions, scores, all)
    }

    @Test func sameClassesAndProbabilitiesAsTheStableSort() {
        var state: UInt64 = 12345
        func next() -> Float {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 100
        }
        for classes in [1, 2, 3, 10, 17, 40] {
            for k in [1, 2, 3, 5, 16, 17, 50] {
                let rows = 23
                // Values on a coarse grid: many ties within a row.
                let logits = (0..<(rows * classes)).map { _ in (next() / 4).rounded() }
                let expected = Self.reference(logits, rows: rows, classes: classes, k: k, labels: nil)
                let got = Self.chosen(logits, rows: rows, classes: classes, k: k, labels: nil, probabilities: true)
                #expect(got.predictions == expected.predictions, "\(classes) classes, k \(k)")
                #expect(got.scores.rows == expected.topK, "\(classes) classes, k \(k)")
                #expect(got.scores.rows.allSatisfy { $0.count == min(k, classes) })
                // Every probability of every row, as asked for with returnProbabilities.
                var row = [Float](repeating: 0, count: classes)
                for r in 0..<rows {
                    logits[(r * classes)..<((r + 1) * classes)].withUnsafeBufferPointer { z in row.withUnsafeMutableBufferPointer { softmax(z, into: $0) } }
                    #expect(Array(got.probabilities[(r * classes)..<((r + 1) * classes)]) == row)
                }
            }
        }
    }

    @Test func tiesGoToTheLowerIndexAndKOfOneIsThePrediction() {
        let logits: [Float] = [1, 3, 3, 0, 3, /**/ 2, 2, 2, 2, 2]
        let got = Self.chosen(logits, rows: 2, classes: 5, k: 1, labels: nil)
        #expect(got.predictions == [1, 0])
        #expect(got.scores.rows.map { $0.map(\.index) } == [[1], [0]])
        let three = Self.chosen(logits, rows: 2, classes: 5, k: 3, labels: nil)
        #expect(three.scores.rows.map { $0.map(\.index) } == [[1, 2, 4], [0, 1, 2]])
        // k beyond the classes: every class, in order.
        let all = Self.chosen(logits, rows: 2, classes: 5, k: 9, labels: nil)
        #expect(all.scores.rows.map { $0.map(\.index) } == [[1, 2, 4, 0, 3], [0, 1, 2, 3, 4]])
    }

    @Test func probabilitiesOfExtremeLogitsAreNumbers() throws {
        let logits: [Float] = [3e38, -3e38, 0, .greatestFiniteMagnitude, -.greatestFiniteMagnitude, 1e-45]
        let got = Self.chosen(logits, rows: 2, classes: 3, k: 3, labels: nil, probabilities: true)
        #expect(got.probabilities.allSatisfy { $0.isFinite })
        #expect(got.scores.probabilities.allSatisfy { $0.isFinite })
        let output = InferenceJob.Output(model: "m:1", sha256: "ab", precision: "fp32", rows: 2, predictions: got.predictions, scores: got.scores,
                                         logits: nil, probabilities: nil, batchRows: 2, batchRequests: 1)
        let text = try JSONValueEncoder().encodeText(output)
        #expect(!text.contains("null"), "\(text)")
        #expect(got.predictions == [0, 0])
    }

    /// The text written in one pass (labels quoted once per class) is the synthesized encoding's, member for member.
    @Test(arguments: [false, true])
    func theAnswerTextIsTheSynthesizedEncodings(binary: Bool) throws {
        let labels = ["cat", "say \"hi\"\n", "ünï\u{1}\u{1F}", "back\\slash", "tab\there", "\u{7F}", "", "ok"]
        let rows = 9, classes = labels.count
        let logits = (0..<(rows * classes)).map { Float(($0 * 7919) % 23) / 3 - 3 }
        for k in [1, 3, 8, 12] {
            for named in [false, true] {
                let got = Self.chosen(logits, rows: rows, classes: classes, k: k, labels: named ? labels : nil, probabilities: true)
                let expected = Self.reference(logits, rows: rows, classes: classes, k: k, labels: named ? labels : nil)
                let encoding: FloatMatrix.Encoding = binary ? .float32Base64 : .numbers
                let matrix = FloatMatrix(rows: rows, columns: classes, values: logits, encoding: encoding)
                let probabilities = FloatMatrix(rows: rows, columns: classes, values: got.probabilities, encoding: encoding)
                let output = InferenceJob.Output(model: "m:\"1\"", sha256: "ab", precision: "fp32", rows: rows, predictions: got.predictions,
                                                 scores: got.scores, logits: matrix, probabilities: probabilities, batchRows: 12, batchRequests: 2)
                let before = InferenceOutputTextTests.Synthesized(
                    model: "m:\"1\"", sha256: "ab", precision: "fp32", rows: rows, predictions: expected.predictions,
                    topK: expected.topK.map { $0.map { .init(index: $0.index, label: $0.label, probability: $0.probability) } },
                    logits: matrix, probabilities: probabilities, batchRows: 12, batchRequests: 2)
                let text = try JSONValueEncoder().encodeText(output)
                #expect(text == (try JSONValueEncoder().encodeText(before)), "k \(k), labels \(named)")
                // The tree route and Foundation's encoder get the same value.
                #expect(try JSONValue(parsing: text) == JSONValueEncoder().encode(output))
                let foundation = try JSONValue(parsing: JSONEncoder().encode(output)), parsed = try JSONValue(parsing: text)
                #expect(foundation["topK"] == parsed["topK"] && foundation["predictions"] == parsed["predictions"])
                // The `[[Score]]` view reads back what was written.
                #expect(output.topK == expected.topK)
            }
        }
    }

    @Test func aHandBuiltAnswerWithRaggedRowsAndPerScoreLabels() throws {
        let topK: [[InferenceJob.Score]] = [
            [.init(index: 2, label: "two", probability: 0.5), .init(index: 0, label: nil, probability: 0.25)],
            [],
            [.init(index: 1, label: "o\"ne", probability: 1)],
        ]
        let output = InferenceJob.Output(model: "m", sha256: "s", precision: "fp16", rows: 3, predictions: [2, 0, 1], topK: topK,
                                         logits: nil, probabilities: nil, batchRows: 3, batchRequests: 1)
        #expect(output.topK == topK)
        #expect(try JSONValueEncoder().encodeText(output) == #"{"model":"m","sha256":"s","precision":"fp16","rows":3,"predictions":[2,0,1],"topK":[[{"index":2,"label":"two","probability":0.5},{"index":0,"probability":0.25}],[],[{"index":1,"label":"o\"ne","probability":1}]],"batchRows":3,"batchRequests":1}"#)
    }
}
