import JobFarmTesting
import Compute
import Foundation
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import RedisClient
import Testing

@Suite("ML handlers through the queue", .enabled(if: TestRedis.available))
struct HandlerTests {
    @Test("inference: concurrent single-row jobs are batched and each gets its own answer")
    func inferenceBatched() async throws {
        let farm = try mlTestFarm()
        let model = try randomModel(inputs: 8, hidden: 16, outputs: 4)
        try await withMLWorker(farm: farm, options: testOptions(batching: true, maxBatch: 32)) { environment in
            _ = try await environment.models.push(model: model, name: "tiny")
            var rng = SeededRandom(seed: 3)
            let rows = (0..<48).map { _ in (0..<8).map { _ in Double(rng.nextUnitFloat() * 4 - 2) } }
            let requests = try rows.map { row in
                EnqueueRequest(kind: "inference", queue: "ml", payload: try JSONValue(encoding: InferenceRequestBody(model: "tiny", inputs: [row])))
            }
            let ids = try await farm.enqueue(requests)
            var batched = 0
            for (id, row) in zip(ids, rows) {
                let status = try await farm.wait(for: id, queue: "ml", timeout: .seconds(30))
                #expect(status.state == .succeeded, "\(status.error ?? "")")
                let result = try #require(status.result)
                let logits = result["logits"]?.items.first?.items.compactMap(\.doubleValue) ?? []
                let expected = try model.logits(rows: row.map { Float($0) }, batch: 1)
                #expect(logits.count == 4)
                for (a, b) in zip(logits, expected) { #expect(abs(a - Double(b)) <= 1e-5 * max(1, abs(Double(b)))) }
                #expect(result["predictions"]?.items.first?.intValue == expected.indices.max { expected[$0] < expected[$1] })
                if (result.number("batchRequests") ?? 1) > 1 { batched += 1 }
            }
            #expect(batched > 0, "some requests shared a forward pass")
            #expect(environment.batcher.passes < 48)
            #expect(await environment.cache.loads == 1, "the model loaded once")
        }
    }

    @Test("inference at fp16 and int8 of an fp32 model stays close to fp32")
    func inferencePrecisions() async throws {
        let farm = try mlTestFarm()
        let model = try randomModel(inputs: 8, hidden: 16, outputs: 4)
        try await withMLWorker(farm: farm, options: testOptions(batching: false)) { environment in
            _ = try await environment.models.push(model: model, name: "tiny")
            let row = (0..<8).map { Double($0) / 8 - 0.4 }
            let expected = try model.logits(rows: row.map { Float($0) }, batch: 1)
            for (precision, tolerance) in [("fp32", 1e-5), ("fp16", 1e-2), ("int8", 5e-2)] {
                let result = try await succeed(farm, "inference", try JSONValue(encoding: InferenceRequestBody(model: "tiny:1", inputs: [row], precision: precision)).jsonText)
                #expect(result.text("precision") == precision)
                let logits = result["logits"]?.items.first?.items.compactMap(\.doubleValue) ?? []
                #expect(logits.count == 4)
                for (a, b) in zip(logits, expected) { #expect(abs(a - Double(b)) <= tolerance, "\(precision): \(a) vs \(b)") }
            }
        }
    }

    @Test("batch_analysis on digits matches direct statistics; large matrices are stored, not embedded")
    func batchAnalysis() async throws {
        let farm = try mlTestFarm()
        var options = testOptions()
        options.maxEmbeddedMatrixColumns = 16
        try await withMLWorker(farm: farm, options: options) { environment in
            let result = try await succeed(farm, "batch_analysis", """
                {"dataset": "data/digits/digits.csv", "labelColumn": "target", "pcaComponents": 3, "histogramBins": 17}
                """)
            #expect(result.number("rows") == 1797 && result.number("columns") == 64)
            let digits = try digitsDataset(from: PackagePaths.digits)
            let summary = result["summary"]?.items ?? []
            #expect(summary.count == 64)
            let column = 20
            let values = (0..<digits.count).map { Double(digits.features[$0 * 64 + column]) }
            let mean = values.reduce(0, +) / Double(values.count)
            let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
            #expect(summary[column].text("name") == "pixel_20")
            #expect(abs((summary[column].number("mean") ?? 0) - mean) < 1e-9)
            #expect(abs((summary[column].number("std") ?? 0) - std) < 1e-9)
            #expect(summary[column].number("max") == values.max())
            #expect(summary[column]["histogram"]?["counts"]?.items.compactMap(\.intValue).reduce(0, +) == 1797)
            let ratios = result["pca"]?["explainedVarianceRatio"]?.items.compactMap(\.doubleValue) ?? []
            #expect(ratios.count == 3 && ratios[0] >= ratios[1] && ratios[1] >= ratios[2] && ratios.reduce(0, +) < 1)
            // 64 columns > 16: the correlation matrix is a farm dataset, not inline.
            let stored = try #require(result["correlation"]?.text("stored"))
            #expect(stored.hasPrefix("farm:"))
            let (record, bytes) = try await environment.datasets.bytes(String(stored.dropFirst(5)))
            #expect(record.format == "npy")
            let matrix = try NpyArray(data: Data(bytes))
            #expect(matrix.shape == [64, 64])
        }
    }

    @Test("datasets from the farm (farm:NAME), CSV and .npy, feed train and batch_analysis")
    func farmDatasets() async throws {
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm) { environment in
            let csv = try [UInt8](Data(contentsOf: URL(fileURLWithPath: PackagePaths.digits)))
            try await environment.datasets.push(name: "digits", bytes: csv)
            // Two separable blobs as a .npy with the label in the last column.
            var rng = SeededRandom(seed: 5)
            var values: [Float] = []
            for r in 0..<200 {
                let label = Float(r % 2)
                values += [label * 4 + rng.nextUnitFloat(), label * 4 + rng.nextUnitFloat(), label]
            }
            try await environment.datasets.push(name: "blobs", bytes: [UInt8](try NpyArray(shape: [200, 3], storage: .float32(values)).serialized()))
            let analysis = try await succeed(farm, "batch_analysis", #"{"dataset": "farm:blobs", "labelColumn": "last"}"#)
            #expect(analysis.number("columns") == 2 && analysis.number("rows") == 200)
            let trained = try await succeed(farm, "train", """
                {"dataset": "farm:blobs", "labelColumn": "last", "name": "blobs", "hiddenSizes": [8], "epochs": 30,
                 "holdout": {"fraction": 0.25, "seed": 1}, "optimizer": "sgd", "learningRate": 0.05}
                """)
            #expect((trained.number("holdoutAccuracy") ?? 0) >= 0.99)
            let fromFarm = try await succeed(farm, "batch_analysis", #"{"dataset": "farm:digits", "labelColumn": "target", "pcaComponents": 0, "covariance": false}"#)
            #expect(fromFarm.number("rows") == 1797)
        }
    }
}

/// An inference payload.
struct InferenceRequestBody: Encodable {
    var model: String
    var inputs: [[Double]]
    var precision: String?
}
