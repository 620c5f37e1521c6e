from imgsearch.cli import main

main()
