import ArgumentParser
import Foundation
import JobKinds
import JobPayloads
import JobProtocol
import MLJobs

/// `jobfarm bench codec`: the CPU a worker spends per job turning a payload into a handler's parameters (and a
/// result into text), the way it did before (`JSONValue` → text → Foundation's `JSONDecoder`) beside the way it does
/// now (`JSONValueDecoder` on the `JSONValue` the envelope parser made), for the built-in and ML kinds' payloads.
struct BenchCodecCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "codec",
        abstract: "ns per job to decode each kind's payload (Foundation JSONDecoder vs JSONValueDecoder) and to encode results.",
        discussion: "No Redis needed. Build in release first: swift build -c release.")

    @Option(help: "Timed rounds per figure (the best is kept).") var rounds: Int = 9
    @Option(help: "Seconds per round.") var minTime: Double = 0.05
    @Option(help: "Sections: parameters,results,numbers,tensors.") var only: String = "parameters,results,numbers,tensors"

    /// A kind's payload (the samples in jobs/) and how its parameters are decoded.
    struct Case: Sendable {
        var kind: String
        var payload: String
        /// nil: the kind takes the `JSONValue` as it is (no decoding, before or after).
        var foundation: (@Sendable (JSONValue) throws -> Void)?
        var own: (@Sendable (JSONValue) throws -> Void)?
    }

    static func decoding<P: Decodable>(_ type: P.Type, kind: String, _ payload: String) -> Case {
        Case(kind: kind, payload: payload,
             foundation: { value in _ = try JSONDecoder().decode(P.self, from: Data(value.jsonText.utf8)) },
             own: { value in _ = try JSONValueDecoder().decode(P.self, from: value) })
    }

    static let cases: [Case] = [
        decoding(SleepJob.Parameters.self, kind: "sleep", #"{"seconds": 2, "steps": 20}"#),
        decoding(FailJob.Parameters.self, kind: "fail", #"{"times": 1, "message": "transient failure (succeeds on attempt 2)"}"#),
        Case(kind: "echo", payload: #"{"message": "hello from jobs/01-echo.json"}"#),
        Case(kind: "noop", payload: "null"),
        decoding(QuantizePayload.self, kind: "quantize", #"{"model": "digits-mlp:candidate", "precision": "fp16", "alias": "candidate-fp16"}"#),
        decoding(ValidatePayload.self, kind: "validate", #"{"candidate": "digits-mlp:candidate-int8", "reference": "digits-mlp:candidate", "dataset": "data/digits/digits.csv", "labelColumn": "target", "holdout": {"fraction": 0.25, "seed": 0}, "thresholds": {"minAccuracy": 0.97, "minTop1Agreement": 0.99, "maxSizeRatio": 0.30}, "promote": {"alias": "production"}}"#),
        decoding(TrainPayload.self, kind: "train", #"{"dataset": "data/digits/digits.csv", "labelColumn": "target", "name": "digits-mlp", "hiddenSizes": [128], "activation": "relu", "optimizer": "adam", "learningRate": 0.003, "l2": 0.0001, "batchSize": 64, "epochs": 60, "seed": 1, "holdout": {"fraction": 0.25, "seed": 0}, "classLabels": ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], "alias": "candidate"}"#),
        decoding(BatchAnalysisPayload.self, kind: "batch_analysis", #"{"dataset": "data/digits/digits.csv", "labelColumn": "target", "quantiles": [0.05, 0.25, 0.5, 0.75, 0.95], "histogramBins": 8, "covariance": true, "pcaComponents": 5}"#),
        Case(kind: "inference", payload: #"{"model": "digits-mlp:production", "inputs": [[0.0, 0.0, 5.0, 13.0, 9.0, 1.0, 0.0, 0.0, 0.0, 0.0, 13.0, 15.0, 10.0, 15.0, 5.0, 0.0, 0.0, 3.0, 15.0, 2.0, 0.0, 11.0, 8.0, 0.0, 0.0, 4.0, 12.0, 0.0, 0.0, 8.0, 8.0, 0.0, 0.0, 5.0, 8.0, 0.0, 0.0, 9.0, 8.0, 0.0, 0.0, 4.0, 11.0, 0.0, 1.0, 12.0, 7.0, 0.0, 0.0, 2.0, 14.0, 5.0, 10.0, 12.0, 0.0, 0.0, 0.0, 0.0, 6.0, 13.0, 10.0, 0.0, 0.0, 0.0]], "topK": 3}"#),
    ]

    /// Shaped like an `inference` result of two rows (10 classes, top 3, logits): what a handler's output costs to write.
    struct InferenceLikeResult: Encodable {
        struct Score: Encodable {
            var index: Int
            var label: String?
            var probability: Float
        }
        var model = "digits-mlp"
        var sha256 = String(repeating: "ab", count: 32)
        var precision = "fp32"
        var rows = 2
        var predictions = [0, 1]
        var topK: [[Score]] = (0..<2).map { row in (0..<3).map { Score(index: row + $0, label: "\(row + $0)", probability: 0.7 / Float($0 + 1)) } }
        var logits: [[Float]]? = (0..<2).map { row in (0..<10).map { Float($0 - row) * 1.37 } }
        var batchRows = 2
        var batchRequests = 1
    }

    /// A producer's typed parameters (`JSONValue(encoding:)`), shaped like a `train` payload.
    struct TrainLikeParameters: Encodable {
        var dataset = "data/digits/digits.csv"
        var labelColumn = "target"
        var name = "digits-mlp"
        var hiddenSizes = [128]
        var learningRate: Float = 0.003
        var epochs = 60
        var seed: UInt64 = 1
        var classLabels = (0..<10).map(String.init)
    }

    func run() throws {
        print("jobfarm bench codec — ns per job, best of \(rounds) rounds of \(minTime) s, one thread")
        #if DEBUG
        print("WARNING: debug build; figures are meaningful only from `swift build -c release`")
        #endif
        let sections = Set(only.split(separator: ",").map(String.init))
        if sections.contains("parameters") { try parameters() }
        if sections.contains("results") { try results() }
        if sections.contains("numbers") { try numbers() }
        if sections.contains("tensors") { try tensors() }
    }

    func parameters() throws {
        print("\nparameters: JSONDecoder = what the worker did (payload JSONValue → JSON text → Foundation JSONDecoder);")
        print("JSONValueDecoder = what it does now (straight from the JSONValue the envelope parser made).")
        print("+ envelope = parsing the whole envelope first (both paths do), i.e. the worker's cost from text to parameters.\n")
        print(pad("kind", 16) + pad("payload", 9) + pad("JSONDecoder", 13) + pad("JSONValueDec.", 15) + pad("ratio", 8)
              + pad("+ envelope: before", 20) + pad("after", 9) + "ratio")
        for item in Self.cases {
            let payload = try JSONValue(parsing: item.payload)
            let envelope = JobEnvelope(kind: item.kind, queue: "ml", payload: payload).encoded()
            let bytes = "\(payload.jsonText.utf8.count) B"
            guard let foundation = item.foundation, let own = item.own else {
                let parse = try BenchTiming.interleaved(rounds: rounds, minTime: minTime, [{ _ = try JobEnvelope(decoding: envelope) }])[0]
                print(pad(item.kind, 16) + pad(bytes, 9) + pad("JSONValue parameters: no decoding", 36)
                      + pad(ns(parse), 20) + pad(ns(parse), 9) + "1.00")
                continue
            }
            let times = try BenchTiming.interleaved(rounds: rounds, minTime: minTime, [
                { try foundation(payload) },
                { try own(payload) },
                { try foundation(try JobEnvelope(decoding: envelope).payload) },
                { try own(try JobEnvelope(decoding: envelope).payload) },
            ])
            print(pad(item.kind, 16) + pad(bytes, 9) + pad(ns(times[0]), 13) + pad(ns(times[1]), 15)
                  + pad(String(format: "%.1f×", times[0] / times[1]), 8)
                  + pad(ns(times[2]), 20) + pad(ns(times[3]), 9) + String(format: "%.1f×", times[2] / times[3]))
        }

    }

    func results() throws {
        print("\nresults and typed parameters:")
        let result = InferenceLikeResult()
        let parameters = TrainLikeParameters()
        let resultTimes = try BenchTiming.interleaved(rounds: rounds, minTime: minTime, [
            { _ = String(decoding: try JSONEncoder().encode(result), as: UTF8.self) },
            { _ = try JSONValueEncoder().encodeText(result) },
            { _ = try JSONDecoder().decode(JSONValue.self, from: try JSONEncoder().encode(parameters)) },
            { _ = try JSONValueEncoder().encode(parameters) },
        ])
        print(pad("", 38) + pad("Foundation", 13) + pad("own", 12) + "ratio")
        print(pad("inference-shaped result → JSON text", 38) + pad(ns(resultTimes[0]), 13) + pad(ns(resultTimes[1]), 12)
              + String(format: "%.1f× (JSONEncoder vs JSONValueEncoder.encodeText)", resultTimes[0] / resultTimes[1]))
        print(pad("train-shaped parameters → JSONValue", 38) + pad(ns(resultTimes[2]), 13) + pad(ns(resultTimes[3]), 12)
              + String(format: "%.1f× (JSONEncoder + JSONDecoder vs JSONValue(encoding:))", resultTimes[2] / resultTimes[3]))
    }

    func ns(_ seconds: Double) -> String { String(format: "%.0f ns", seconds * 1e9) }
    func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count + 1), withPad: " ", startingAt: 0) }
}
