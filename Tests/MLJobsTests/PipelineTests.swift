import JobFarmTesting
import Compute
import Foundation
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import Testing

/// Issue 10's end-to-end pipeline through the queue: train on digits → quantize FP16 and int8 → validate → promote →
/// inference, with the accuracy, agreement and size targets asserted.
@Suite("Digits pipeline", .enabled(if: TestRedis.available))
struct PipelineTests {
    @Test("train → quantize fp16/int8 → validate → promote → inference")
    func pipeline() async throws {
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm) { environment in
            // Train on 75 % (stratified, seed 0); the 25 % held out is the test split of every step below.
            let trained = try await succeed(farm, "train", """
                {"dataset": "data/digits/digits.csv", "labelColumn": "target", "name": "digits-mlp",
                 "holdout": {"fraction": 0.25, "seed": 0}, "alias": "candidate"}
                """, timeout: .seconds(600))
            #expect(trained.text("model") == "digits-mlp:1")
            let accuracy = try #require(trained.number("holdoutAccuracy"))
            #expect(accuracy >= 0.97, "held-out accuracy \(accuracy)")
            let digits = try digitsDataset(from: PackagePaths.digits)
            let (trainSplit, test) = try digits.stratifiedSplit(testFraction: 0.25, seed: 0)
            #expect(trained.number("holdoutRows") == Double(test.count))
            #expect(trained.number("trainRows") == Double(trainSplit.count))
            #expect(abs(test.count - 450) <= 1, "a quarter of 1797 rows, class by class")

            let fp16 = try await succeed(farm, "quantize", #"{"model": "digits-mlp:1", "precision": "fp16"}"#)
            let int8 = try await succeed(farm, "quantize", #"{"model": "digits-mlp:1", "precision": "int8"}"#)
            #expect(fp16.text("model") == "digits-mlp:2" && int8.text("model") == "digits-mlp:3")
            let fp16Ratio = try #require(fp16.number("sizeRatio")), int8Ratio = try #require(int8.number("sizeRatio"))
            #expect(fp16Ratio <= 0.51, "fp16 size ratio \(fp16Ratio)")
            #expect(int8Ratio <= 0.30, "int8 size ratio \(int8Ratio)")
            #expect(fp16["tensors"]?.items.count == 4, "two weights and two biases")

            // The stored versions agree with the job's report.
            let v1 = try await environment.models.resolve("digits-mlp:1")
            let v3 = try await environment.models.resolve("digits-mlp:3")
            #expect(v3.precision == "int8" && v3.metadata["source"] == "digits-mlp:1")
            #expect(Double(v3.tensorBytes) / Double(v1.tensorBytes) == int8Ratio)

            let split = #""holdout": {"fraction": 0.25, "seed": 0}"#
            let checkFP16 = try await succeed(farm, "validate", """
                {"candidate": "digits-mlp:2", "reference": "digits-mlp:1", "dataset": "data/digits/digits.csv",
                 "labelColumn": "target", \(split),
                 "thresholds": {"minTop1Agreement": 0.995, "minAccuracy": 0.97, "maxSizeRatio": 0.51}}
                """)
            let checkInt8 = try await succeed(farm, "validate", """
                {"candidate": "digits-mlp:3", "reference": "digits-mlp:1", "dataset": "data/digits/digits.csv",
                 "labelColumn": "target", \(split),
                 "thresholds": {"minTop1Agreement": 0.99, "minAccuracy": 0.97, "maxSizeRatio": 0.30},
                 "promote": {"alias": "production"}}
                """)
            #expect(checkFP16[ "passed"] == .bool(true), "\(checkFP16.jsonText)")
            #expect(checkInt8["passed"] == .bool(true), "\(checkInt8.jsonText)")
            #expect(try #require(checkFP16.number("top1Agreement")) >= 0.995)
            #expect(try #require(checkInt8.number("top1Agreement")) >= 0.99)
            #expect(checkFP16.number("rows") == Double(test.count))
            #expect(checkFP16.number("referenceAccuracy") == accuracy)
            #expect(checkInt8["promoted"]?.text("model") == "digits-mlp:3")
            #expect(try await environment.models.resolve("digits-mlp:production").version == 3)

            // A threshold the candidate cannot meet: fails, and the alias does not move.
            let strict = try await succeed(farm, "validate", """
                {"candidate": "digits-mlp:2", "reference": "digits-mlp:1", "dataset": "data/digits/digits.csv",
                 "labelColumn": "target", \(split), "thresholds": {"maxSizeRatio": 0.1}, "promote": {"alias": "production"}}
                """)
            #expect(strict["passed"] == .bool(false))
            #expect(strict["promoted"] == nil || strict["promoted"] == .null)
            #expect(try await environment.models.resolve("digits-mlp:production").version == 3)

            // Inference on the promoted alias: held-out rows, predictions against labels.
            let rows = (0..<40).map { r in (0..<64).map { Double(test.features[r * 64 + $0]) } }
            let payload = try JSONValue(encoding: ["model": JSONValue.string("digits-mlp:production"),
                                                   "inputs": try JSONValue(encoding: rows), "topK": .number(2)])
            let answer = try await succeed(farm, "inference", payload.jsonText)
            let predictions = answer["predictions"]?.items.compactMap(\.intValue) ?? []
            #expect(predictions.count == 40)
            let correct = zip(predictions, test.labels.prefix(40)).filter { $0 == $1 }.count
            #expect(correct >= 37, "\(correct)/40 correct")
            #expect(answer.text("model") == "digits-mlp:3" && answer.text("precision") == "int8")
            #expect(answer["topK"]?.items.first?.items.count == 2)
        }
    }
}
