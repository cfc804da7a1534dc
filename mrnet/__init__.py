"""Everything from the feature cache on: model, data loading, training, evaluation."""
