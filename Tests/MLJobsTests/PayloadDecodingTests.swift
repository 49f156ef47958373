import Foundation
import JobPayloads
import JobProtocol
import MLJobs
import Testing

/// The ML kinds' parameters decoded by the worker (`JSONValueDecoder`, from the envelope's `JSONValue`) and by
/// Foundation's `JSONDecoder` from the same text: the same values, or the same kind of error at the same field.
@Suite("ML parameters: JSONValueDecoder agrees with JSONDecoder")
struct PayloadDecodingTests {
    /// A value (as `String(reflecting:)` prints it) or an error's kind and coding path.
    func outcome(_ body: () throws -> Any) -> String {
        do {
            return "value \(String(reflecting: try body()))"
        } catch let error as DecodingError {
            switch error {
            case .typeMismatch(_, let c): return "typeMismatch at '\(path(c))'"
            case .valueNotFound(_, let c): return "valueNotFound at '\(path(c))'"
            case .keyNotFound(let key, let c): return "keyNotFound(\(key.stringValue)) at '\(path(c))'"
            // Foundation reports a number out of the type's range at the top, JSONValueDecoder at the field.
            case .dataCorrupted: return "dataCorrupted"
            @unknown default: return "\(error)"
            }
        } catch {
            return "\(error)"
        }
    }

    func path(_ context: DecodingError.Context) -> String { context.codingPath.map(\.stringValue).joined(separator: ".") }

    func expectAgreement<T: Decodable>(_ type: T.Type, _ texts: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        for text in texts {
            let theirs = outcome { try JSONDecoder().decode(T.self, from: Data(text.utf8)) }
            let ours = outcome { try JSONValueDecoder().decode(T.self, from: try JSONValue(parsing: text)) }
            #expect(ours == theirs, "\(T.self) from \(text)", sourceLocation: sourceLocation)
        }
    }

    @Test func train() {
        let sample = #"{"dataset": "data/digits/digits.csv", "labelColumn": "target", "name": "digits-mlp", "hiddenSizes": [128], "activation": "relu", "optimizer": "adam", "learningRate": 0.003, "l2": 0.0001, "batchSize": 64, "epochs": 60, "seed": 1, "holdout": {"fraction": 0.25, "seed": 0}, "classLabels": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "alias": "candidate"}"#
        expectAgreement(TrainPayload.self, [
            sample,
            #"{"dataset": "d.csv", "name": "m"}"#,
            #"{"dataset": "d.csv"}"#,
            sample.replacingOccurrences(of: #""seed": 1,"#, with: #""seed": -1,"#),
            sample.replacingOccurrences(of: #""seed": 1,"#, with: #""seed": null,"#),
            sample.replacingOccurrences(of: #""hiddenSizes": [128]"#, with: #""hiddenSizes": ["128"]"#),
            sample.replacingOccurrences(of: #""hiddenSizes": [128]"#, with: #""hiddenSizes": 128"#),
            sample.replacingOccurrences(of: #""learningRate": 0.003"#, with: #""learningRate": 1e39"#),
            sample.replacingOccurrences(of: #""epochs": 60"#, with: #""epochs": 60.5"#),
            sample.replacingOccurrences(of: #""fraction": 0.25"#, with: #""fraction": "a quarter""#),
            sample.replacingOccurrences(of: #""fraction": 0.25, "#, with: ""),
            sample.replacingOccurrences(of: #"["0", "1", "2""#, with: #"[0, "1", "2""#),
            sample.replacingOccurrences(of: #""seed": 1,"#, with: #""seed": 9007199254740991,"#),
        ])
        // The one difference: an integer beyond ±2^53 is not exact in a JSONValue, so it is refused, not rounded.
        let big = sample.replacingOccurrences(of: #""seed": 1,"#, with: #""seed": 12345678901234567890,"#)
        #expect(outcome { try JSONDecoder().decode(TrainPayload.self, from: Data(big.utf8)).seed as Any } == "value Optional(12345678901234567890)")
        do {
            _ = try JSONValueDecoder().decode(TrainPayload.self, from: try JSONValue(parsing: big))
            Issue.record("a seed beyond 2^53 was read")
        } catch DecodingError.dataCorrupted(let context) {
            #expect(context.codingPath.map(\.stringValue) == ["seed"])
            #expect(context.debugDescription.contains("beyond ±2^53"), "\(context.debugDescription)")
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func otherKinds() {
        expectAgreement(QuantizePayload.self, [
            #"{"model": "digits-mlp:candidate", "precision": "fp16", "alias": "candidate-fp16"}"#,
            #"{"model": "m", "precision": "int8", "pruneSparsity": 0.5}"#,
            #"{"model": "m", "precision": 8}"#, #"{"precision": "int8"}"#, #"{"model": "m", "precision": "int8", "pruneSparsity": "half"}"#,
        ])
        expectAgreement(ValidatePayload.self, [
            #"{"candidate": "digits-mlp:candidate-int8", "reference": "digits-mlp:candidate", "dataset": "data/digits/digits.csv", "labelColumn": "target", "holdout": {"fraction": 0.25, "seed": 0}, "thresholds": {"minAccuracy": 0.97, "minTop1Agreement": 0.99, "maxSizeRatio": 0.30}, "promote": {"alias": "production"}}"#,
            #"{"candidate": "c", "dataset": "d", "thresholds": {"minAccuracy": "high"}}"#,
            #"{"candidate": "c", "dataset": "d", "promote": {}}"#,
            #"{"candidate": "c", "dataset": "d", "blockRows": -1}"#,
            #"{"candidate": "c", "dataset": "d", "blockRows": 1e300}"#,
        ])
        expectAgreement(BatchAnalysisPayload.self, [
            #"{"dataset": "data/digits/digits.csv", "labelColumn": "target", "quantiles": [0.05, 0.25, 0.5, 0.75, 0.95], "histogramBins": 8, "covariance": true, "pcaComponents": 5}"#,
            #"{"dataset": "d", "quantiles": [0.5, null]}"#,
            #"{"dataset": "d", "covariance": "yes"}"#,
            #"{"dataset": "d", "covariance": null}"#,
            #"{"dataset": "d", "memoryBudgetBytes": 9007199254740991}"#,
        ])
    }
}
