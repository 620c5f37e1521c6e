"""Driver program for spark-submit: the imgsearch command line, run by Spark (YARN/Kubernetes cluster mode needs a
file to submit). Example: spark-submit --master yarn ... imgsearch_spark.py embed hdfs:///photos --out hdfs:///emb --engine spark
"""

from imgsearch.cli import main

main()
