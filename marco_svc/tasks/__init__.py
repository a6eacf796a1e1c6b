"""Scale-out on Celery: the broker app and its tasks (`app`), the dispatcher that sends the
images waiting to be scored to the workers (`dispatcher`), and heatmaps asked for over HTTP
sent to the workers (`heatmap_requests`).

Used only when the setting `broker_url` is set; the embedded default runs the same jobs
(`marco_svc.scoring.jobs`) in-process.
"""
