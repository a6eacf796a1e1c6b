from marco_svc.cli import main

main()
