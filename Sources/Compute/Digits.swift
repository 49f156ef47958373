import Foundation

/// Loads the UCI "Optical Recognition of Handwritten Digits" data (1,797 8×8
/// images, 64 features in 0...16, classes 0–9) as shipped in `data/digits/digits.csv`
/// (header `pixel_0 … pixel_63,target`; the rows are scikit-learn's `digits.csv.gz`).
public func digitsDataset(from csvPath: String) throws -> LabeledDataset {
    if csvPath.hasSuffix(".gz") {
        throw ComputeError.invalidArgument("digitsDataset reads the uncompressed digits.csv shipped next to \(csvPath)")
    }
    let csv = try CSVDataset(contentsOf: URL(fileURLWithPath: csvPath), labelColumn: "target")
    guard csv.featureCount == 64 else {
        throw ComputeError.shapeMismatch("digits CSV has \(csv.featureCount) feature columns, expected 64")
    }
    return try csv.labeledDataset()
}
