"""The aimass trainer: TensorFlow/Keras image classification on image folders in S3.

`aimass_trainer.run.run_training` runs one TrainingJob from start to finish. It is split by
concern: `data` (S3 image folders to tf.data, with `cache`), `augment` (random transforms in the
pipeline), `adversarial` (FGSM examples in the train step), `models` (the small ResNet and the
keras.applications ResNets, with stable layer names), `finetune` (pretrained bases, freezing and
the second phase), `loop` (strategy and the custom training loop), `checkpoints` (per-epoch
state in S3, for resuming) and `outputs` (model.keras, SavedModel, labels, metrics, plot).

This package imports TensorFlow; the shared `aimass` package does not, so the operator stays
free of it.
"""
