"""Training side: dataset adapters, tf.data pipeline, Keras models, training and evaluation."""
